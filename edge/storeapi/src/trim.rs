//! Sending only the samples a `Series` request needs (issue 25).
//!
//! A store keeps chunks of up to 120 samples (30 minutes at 15 s); an instant query needs the last
//! five minutes of each series. Chunks that do not overlap `[min_time, max_time]` are never read
//! (the sources select by chunk range). A chunk that reaches past either end is cut here: its samples
//! inside are encoded into a new XOR chunk, so the bytes on the wire, and the decoding on the client,
//! follow what the query uses rather than the chunk layout. Native-histogram chunks are sent as
//! stored.
//!
//! A series whose only samples in range are stale markers is left out: PromQL skips stale samples,
//! so it would contribute nothing (a series that ended shortly before an instant query's time).
//! This is decided from the cut chunks and from short whole ones; a longer chunk that lies wholly
//! inside the range is sent as stored, undecoded.
//!
//! Range queries with a step longer than the window each step reads (e.g. `rate(x[1m])` every hour)
//! need only the samples in those windows. The StoreAPI's `QueryHints` cannot say so safely
//! (Prometheus sets no range for plain selectors, and aligns a subquery's steps differently), so a
//! Meridian gateway says it in the request's `hints` field with its own message, [`SeriesWindows`]:
//! every step ends at `max_time - k × step_millis`, and a step reads the `window_millis` before it.
//! Other clients do not send it; other stores ignore it (the field is an `Any` that stores use for
//! their own hints).
//!
//! An instant vector selector reads one sample per series: the last in its lookback window. With
//! `step_millis` 0 and `last_only`, the hint says so, and only that sample is sent (a stale marker
//! last means no value: the series is left out).

use meridian_core::chunkenc::{Encoding, XorChunk, XorIterator};
use meridian_core::sample::is_stale_nan;
use meridian_core::series::SourceChunk;

use crate::proto::thanos as pb;

/// `type_url` of [`SeriesWindows`] in `SeriesRequest.hints`.
pub const SERIES_WINDOWS_TYPE_URL: &str = "type.googleapis.com/meridian.storeapi.SeriesWindows";

/// Meridian's hint that a request's samples are read only in windows ending at each step.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct SeriesWindows {
    /// Distance between the steps, ms; the last step is at `max_time`.
    #[prost(int64, tag = "1")]
    pub step_millis: i64,
    /// How far before its step a step reads (the range of a matrix selector, the lookback of a vector
    /// selector), ms.
    #[prost(int64, tag = "2")]
    pub window_millis: i64,
    /// With `step_millis` 0 (one step, at `max_time`): only the last sample in the window is read
    /// (an instant vector selector's lookback), stale marker or not.
    #[prost(bool, tag = "3")]
    pub last_only: bool,
}

impl SeriesWindows {
    /// The hint as the request's `hints` field.
    pub fn to_any(self) -> prost_types::Any {
        prost_types::Any {
            type_url: SERIES_WINDOWS_TYPE_URL.to_owned(),
            value: prost::Message::encode_to_vec(&self),
        }
    }
}

/// What part of each series a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub min_time: i64,
    pub max_time: i64,
    /// `(step, window)`, only when the windows leave gaps (`window + 1 < step`).
    windows: Option<(i64, i64)>,
    /// Only the last sample at or before `max_time`, at most this long before it.
    last_within: Option<i64>,
}

impl Needed {
    /// From a request: its time range, and its [`SeriesWindows`] hint when present and meaningful
    /// (a hint that does not decode, or whose windows cover the range anyway, is ignored).
    pub fn from_request(r: &pb::SeriesRequest) -> Needed {
        let hint = r
            .hints
            .as_ref()
            .filter(|a| a.type_url == SERIES_WINDOWS_TYPE_URL)
            .and_then(|a| <SeriesWindows as prost::Message>::decode(a.value.as_slice()).ok())
            .filter(|w| w.step_millis >= 0 && w.window_millis >= 0);
        let windows = hint
            .filter(|w| w.step_millis > 0)
            // Inclusive at both ends: a sample exactly `window` before a step is kept (one
            // millisecond more than a left-open window needs, never less).
            .filter(|w| w.window_millis.saturating_add(1) < w.step_millis)
            .map(|w| (w.step_millis, w.window_millis));
        let last_within = hint
            .filter(|w| w.step_millis == 0 && w.last_only)
            .map(|w| w.window_millis);
        Needed {
            min_time: r.min_time,
            max_time: r.max_time,
            windows,
            last_within,
        }
    }

    fn wants(&self, t: i64) -> bool {
        if t < self.min_time || t > self.max_time {
            return false;
        }
        match self.windows {
            None => true,
            // `t <= max_time`, so the difference is not negative (and fits: both are in range).
            Some((step, window)) => {
                (self.max_time.abs_diff(t) % step.unsigned_abs()) <= window.unsigned_abs()
            }
        }
    }

    /// Whether all of `c` is needed, so it can be sent as stored.
    fn covers(&self, c: &SourceChunk) -> bool {
        self.windows.is_none() && c.min_time >= self.min_time && c.max_time <= self.max_time
    }
}

/// `chunks` (one series', sorted by time) cut to what `need` wants; `None` when nothing but stale
/// markers remains, so the series is not sent. A chunk that does not decode is sent as stored (the
/// client reports it, as it would without the cut).
pub fn trim(chunks: Vec<SourceChunk>, need: &Needed) -> Option<Vec<SourceChunk>> {
    if let Some(window) = need.last_within {
        return last_sample(chunks, need.max_time, window);
    }
    let mut out = Vec::with_capacity(chunks.len());
    // Whether the series has a sample the client will use.
    let mut live = false;
    for c in chunks {
        // Native-histogram chunks are sent as stored (not cut).
        if c.encoding != Encoding::Xor {
            live = true;
            out.push(c);
            continue;
        }
        if need.covers(&c) || c.data.is_empty() {
            live = live || c.data.is_empty() || !all_stale(&c);
            out.push(c);
            continue;
        }
        match cut(&c, need) {
            Cut::Whole => {
                live = true;
                out.push(c);
            }
            Cut::Part(part, part_live) => {
                live |= part_live;
                out.extend(part);
            }
        }
    }
    live.then_some(out)
}

/// The last sample in `[maxt - window, maxt]` as a chunk of its own; `None` when there is none or it
/// is a stale marker (the selector then has no value: the series is not sent). Chunks that do not
/// decode are sent as stored.
fn last_sample(chunks: Vec<SourceChunk>, maxt: i64, window: i64) -> Option<Vec<SourceChunk>> {
    let from = maxt.saturating_sub(window);
    // With native histograms the chunks in the window are sent as stored.
    if chunks
        .iter()
        .any(|c| c.encoding != Encoding::Xor && c.max_time >= from && c.min_time <= maxt)
    {
        return Some(chunks);
    }
    let mut best: Option<(i64, f64)> = None;
    // A chunk's `min_time` is its first sample's time, so a chunk that starts inside the window holds a
    // sample there; a chunk that ends before that sample cannot hold the last one and is not decoded.
    // (A query just after a chunk boundary otherwise decodes the whole previous chunk for nothing.)
    let latest_start = chunks
        .iter()
        .filter(|c| c.min_time >= from && c.min_time <= maxt && !c.data.is_empty())
        .map(|c| c.min_time)
        .max();
    // Chunks may overlap (head and a new block): each is searched.
    for c in &chunks {
        if c.max_time < from || c.min_time > maxt {
            continue;
        }
        if latest_start.is_some_and(|s| c.max_time < s) {
            continue;
        }
        let Ok(mut it) = XorIterator::new(&c.data) else {
            return Some(chunks);
        };
        let mut next = it.seek(from);
        while let Some((t, v)) = next {
            if t > maxt {
                break;
            }
            if best.is_none_or(|(bt, _)| t > bt) {
                best = Some((t, v));
            }
            next = it.next_sample();
        }
        if it.err().is_some() || c.data.is_empty() {
            return Some(chunks);
        }
    }
    let (t, v) = best?;
    if is_stale_nan(v) {
        return None;
    }
    let mut one = XorChunk::new();
    if one.append(t, v).is_err() {
        return Some(chunks);
    }
    Some(vec![SourceChunk {
        encoding: meridian_core::chunkenc::Encoding::Xor,
        min_time: t,
        max_time: t,
        data: one.into_bytes().into(),
    }])
}

/// Whether a short chunk holds only stale markers. Stale markers come one at a time, after a
/// series' last sample, so a chunk of more than a few samples holds live ones: it is not decoded.
fn all_stale(c: &SourceChunk) -> bool {
    const SHORT: u16 = 4;
    let Ok(it) = XorIterator::new(&c.data) else {
        return false;
    };
    it.total() <= SHORT && it.map(|s| s.v).all(is_stale_nan)
}

enum Cut {
    /// Send the chunk as it is (it does not decode).
    Whole,
    /// The samples wanted, as a chunk (`None`: no sample wanted), and whether one is not stale.
    Part(Option<SourceChunk>, bool),
}

fn cut(c: &SourceChunk, need: &Needed) -> Cut {
    let Ok(mut it) = XorIterator::new(&c.data) else {
        return Cut::Whole;
    };
    let mut first = it.seek(need.min_time);
    let mut chunk = XorChunk::new();
    let (mut min, mut max, mut live) = (i64::MAX, i64::MIN, false);
    while let Some((t, v)) = first.take().or_else(|| it.next_sample()) {
        if t > need.max_time {
            break;
        }
        if !need.wants(t) {
            continue;
        }
        if chunk.append(t, v).is_err() {
            return Cut::Whole;
        }
        min = min.min(t);
        max = t;
        live |= !is_stale_nan(v);
    }
    if it.err().is_some() {
        return Cut::Whole;
    }
    if min == i64::MAX {
        return Cut::Part(None, false);
    }
    Cut::Part(
        Some(SourceChunk {
            encoding: meridian_core::chunkenc::Encoding::Xor,
            min_time: min,
            max_time: max,
            data: chunk.into_bytes().into(),
        }),
        live,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_core::sample::stale_nan;

    fn chunk(samples: &[(i64, f64)]) -> SourceChunk {
        let mut c = XorChunk::new();
        for (t, v) in samples {
            c.append(*t, *v).unwrap();
        }
        SourceChunk {
            encoding: meridian_core::chunkenc::Encoding::Xor,
            min_time: samples[0].0,
            max_time: samples[samples.len() - 1].0,
            data: c.into_bytes().into(),
        }
    }

    fn samples(chunks: &[SourceChunk]) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        for c in chunks {
            let mut it = XorIterator::new(&c.data).unwrap();
            while let Some((t, v)) = it.next_sample() {
                out.push((t, v.to_bits()));
            }
        }
        out
    }

    fn need(min: i64, max: i64, windows: Option<(i64, i64)>) -> Needed {
        let mut r = pb::SeriesRequest {
            min_time: min,
            max_time: max,
            ..Default::default()
        };
        if let Some((step, window)) = windows {
            r.hints = Some(
                SeriesWindows {
                    step_millis: step,
                    window_millis: window,
                    last_only: false,
                }
                .to_any(),
            );
        }
        Needed::from_request(&r)
    }

    #[test]
    fn a_chunk_reaching_past_the_range_is_cut_to_it() {
        let all: Vec<(i64, f64)> = (0..120).map(|k| (k * 15_000, k as f64)).collect();
        let got = trim(vec![chunk(&all)], &need(600_001, 900_000, None)).unwrap();
        let want: Vec<(i64, u64)> = all
            .iter()
            .filter(|(t, _)| (600_001..=900_000).contains(t))
            .map(|(t, v)| (*t, v.to_bits()))
            .collect();
        assert_eq!(samples(&got), want);
        assert_eq!((got[0].min_time, got[0].max_time), (615_000, 900_000));
        assert!(got[0].data.len() < chunk(&all).data.len() / 3);
    }

    #[test]
    fn a_chunk_inside_the_range_is_sent_as_stored() {
        let c = chunk(&[(10, 1.0), (20, 2.0)]);
        let got = trim(vec![c.clone()], &need(0, 100, None)).unwrap();
        assert_eq!(got[0].data, c.data);
    }

    #[test]
    fn a_series_with_only_stale_markers_in_range_is_left_out() {
        let c = chunk(&[(0, 1.0), (15, 2.0), (30, stale_nan())]);
        assert!(trim(vec![c.clone()], &need(20, 100, None)).is_none());
        // With a live sample in range it stays, its stale marker included.
        let got = trim(vec![c], &need(10, 100, None)).unwrap();
        assert_eq!(samples(&got).len(), 2);
    }

    #[test]
    fn nothing_in_range_leaves_the_series_out() {
        let c = chunk(&[(0, 1.0), (100, 2.0)]);
        assert!(trim(vec![c], &need(10, 90, None)).is_none());
    }

    #[test]
    fn step_windows_keep_only_the_samples_each_step_reads() {
        // Samples every 15 s for 2 h; steps at 0, 1 h and 2 h (the last at max_time), each reading
        // the 60 s before it.
        let all: Vec<(i64, f64)> = (0..=480).map(|k| (k * 15_000, k as f64)).collect();
        let chunks: Vec<SourceChunk> = all.chunks(120).map(chunk).collect();
        let got = trim(chunks, &need(0, 7_200_000, Some((3_600_000, 60_000)))).unwrap();
        let times: Vec<i64> = samples(&got).iter().map(|s| s.0).collect();
        let mut want = vec![0];
        for step in [3_600_000, 7_200_000] {
            want.extend((0..=4).rev().map(|k| step - k * 15_000));
        }
        assert_eq!(times, want);
    }

    fn last_only(min: i64, max: i64, window: i64) -> Needed {
        Needed::from_request(&pb::SeriesRequest {
            min_time: min,
            max_time: max,
            hints: Some(
                SeriesWindows {
                    step_millis: 0,
                    window_millis: window,
                    last_only: true,
                }
                .to_any(),
            ),
            ..Default::default()
        })
    }

    #[test]
    fn an_instant_vector_selector_gets_the_last_sample_only() {
        let all: Vec<(i64, f64)> = (0..120).map(|k| (k * 15_000, k as f64)).collect();
        // Overlapping chunks: the later sample wins wherever it is.
        let got = trim(
            vec![chunk(&all), chunk(&[(900_000, 1.0), (918_000, 7.0)])],
            &last_only(600_001, 920_000, 319_999),
        )
        .unwrap();
        assert_eq!(samples(&got), vec![(918_000, 7.0f64.to_bits())]);
        assert_eq!((got[0].min_time, got[0].max_time), (918_000, 918_000));
        // Nothing in the window, or a stale marker last: nothing to send.
        assert!(trim(vec![chunk(&all)], &last_only(2_000_001, 2_300_000, 299_999)).is_none());
        let ended = chunk(&[(0, 1.0), (15_000, stale_nan())]);
        assert!(trim(vec![ended], &last_only(1, 20_000, 300_000)).is_none());
    }

    #[test]
    fn a_chunk_ending_before_a_later_chunk_starts_in_the_window_is_not_decoded() {
        // The earlier chunk does not even decode: had it been read, it would be sent as stored.
        let earlier = SourceChunk {
            encoding: meridian_core::chunkenc::Encoding::Xor,
            min_time: 0,
            max_time: 1_785_000,
            data: bytes::Bytes::from_static(&[0, 120, 1]),
        };
        let later = chunk(&[(1_800_007, 5.0), (1_815_007, 6.0)]);
        let got = trim(
            vec![earlier.clone(), later.clone()],
            &last_only(1_500_500, 1_800_500, 300_000),
        )
        .unwrap();
        assert_eq!(samples(&got), vec![(1_800_007, 5.0f64.to_bits())]);
        // Without a later chunk starting in the window, the earlier one is read (and sent as stored).
        let got = trim(
            vec![earlier.clone()],
            &last_only(1_500_500, 1_800_500, 300_000),
        )
        .unwrap();
        assert_eq!(got[0].data, earlier.data);
        // An overlapping earlier chunk (ending after the later one starts) is still searched.
        let overlapping = chunk(&[(1_700_000, 1.0), (1_800_100, 2.0)]);
        let got = trim(
            vec![overlapping, later],
            &last_only(1_500_500, 1_800_500, 300_000),
        )
        .unwrap();
        assert_eq!(samples(&got), vec![(1_800_100, 2.0f64.to_bits())]);
    }

    #[test]
    fn windows_that_cover_the_range_or_do_not_decode_change_nothing() {
        let c = chunk(&[(10, 1.0), (20, 2.0)]);
        assert_eq!(need(0, 100, Some((15, 15))), need(0, 100, None));
        let r = pb::SeriesRequest {
            hints: Some(prost_types::Any {
                type_url: SERIES_WINDOWS_TYPE_URL.to_owned(),
                value: vec![0xff, 0xff],
            }),
            ..Default::default()
        };
        assert_eq!(Needed::from_request(&r).windows, None);
        let broken = SourceChunk {
            encoding: meridian_core::chunkenc::Encoding::Xor,
            min_time: 0,
            max_time: 200,
            data: bytes::Bytes::from_static(&[0, 9, 1]),
        };
        let got = trim(vec![broken.clone(), c], &need(0, 100, None)).unwrap();
        assert_eq!(got[0].data, broken.data);
    }
}
