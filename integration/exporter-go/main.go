// A test exporter for native histograms, built on the Prometheus Go client library (Debian's
// golang-github-prometheus-client-golang-dev 1.14): `req_seconds` (a native histogram with classic
// buckets too, by `path`) and `exporter_steps_total`. Observations are fixed by phase: every scrape
// of a phase sees the same values, so two scrapers store the same samples. GET /step moves to the
// next phase (more observations, new buckets, and in phase 3 a new series).
//
// Usage: exporter-go <listen address>
package main

import (
	"fmt"
	"net/http"
	"os"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func main() {
	reg := prometheus.NewRegistry()
	req := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:                        "req_seconds",
		Help:                        "Request durations.",
		Buckets:                     []float64{0.01, 0.1, 1, 10},
		NativeHistogramBucketFactor: 1.1,
	}, []string{"path"})
	steps := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "exporter_steps_total",
		Help: "Phases moved through.",
	})
	reg.MustRegister(req, steps)
	var mu sync.Mutex
	phase := 0
	observe := func(p int) {
		for i := 0; i < 50*(p+1); i++ {
			v := float64((i*37+p*11)%97+1) / 100.0 * float64(p+1)
			req.WithLabelValues("/a").Observe(v)
			if i%3 == 0 {
				req.WithLabelValues("/b").Observe(-v / 10)
			}
			if p >= 2 {
				req.WithLabelValues("/c").Observe(v * 1000)
			}
		}
		req.WithLabelValues("/a").Observe(0)
	}
	observe(0)
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	http.HandleFunc("/step", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		phase++
		observe(phase)
		steps.Inc()
		fmt.Fprintf(w, "%d\n", phase)
	})
	if err := http.ListenAndServe(os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
