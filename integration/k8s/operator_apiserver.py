"""The stand-in Kubernetes API of ../shared/conformance/kubernetes-sd, serving prometheus-operator's
monitoring.coreos.com/v1 resources (ServiceMonitor, PodMonitor, PrometheusRule), Secrets and ConfigMaps
besides the resources it knows.

The harness is imported from where it lives (never copied); this only registers the extra resources in
its tables before starting it:

    python3 operator_apiserver.py <harness dir> [fake_apiserver.py arguments...]
"""
import os
import sys


def main():
    if len(sys.argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    sys.path.insert(0, os.path.abspath(sys.argv[1]))
    import fake_apiserver as f  # noqa: E402 (the harness' directory is only known now)

    extra = {
        # plural -> (group, version, kind, namespaced, shortNames), the harness' table layout
        "secrets": ("", "v1", "Secret", True, []),
        "configmaps": ("", "v1", "ConfigMap", True, ["cm"]),
        "servicemonitors": ("monitoring.coreos.com", "v1", "ServiceMonitor", True, ["smon"]),
        "podmonitors": ("monitoring.coreos.com", "v1", "PodMonitor", True, ["pmon"]),
        "prometheusrules": ("monitoring.coreos.com", "v1", "PrometheusRule", True, ["promrule"]),
    }
    for res, spec in extra.items():
        f.RESOURCES[res] = spec
        f.KIND_TO_RES[spec[2]] = res
        if spec[0]:
            versions = f.GROUPS.setdefault(spec[0], [])
            if spec[1] not in versions:
                versions.append(spec[1])
    return f.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
