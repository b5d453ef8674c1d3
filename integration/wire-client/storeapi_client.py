#!/usr/bin/env python3
"""A StoreAPI client that shares no code with Meridian: gRPC's C core and Python protobuf, with messages
compiled at run time from this directory's .proto files (written from shared/specs/storeapi-wire.md).

Reads Info, Series (every series matching a regex on __name__, with chunk sample counts) and LabelValues
from one endpoint over mTLS and prints what it got as JSON, for the Rust test to compare.

usage: storeapi_client.py ADDR SERVER_NAME CA CERT KEY MIN_TIME MAX_TIME LABEL [BATCH]
"""
import json
import os
import sys
import tempfile


def compile_protos(out):
    from grpc_tools import protoc
    import grpc_tools

    here = os.path.dirname(os.path.abspath(__file__))
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    for name in ("thanos_store.proto", "thanos_info.proto"):
        rc = protoc.main(["protoc", f"-I{here}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", name])
        if rc != 0:
            sys.exit(f"protoc failed on {name}")
    sys.path.insert(0, out)


def labels(ls):
    return {l.name: l.value for l in ls}


def main():
    addr, server_name, ca, cert, key, mint, maxt, label = sys.argv[1:9]
    batch = int(sys.argv[9]) if len(sys.argv) > 9 else 0
    with tempfile.TemporaryDirectory() as out:
        compile_protos(out)
        import grpc
        import thanos_info_pb2 as info_pb
        import thanos_info_pb2_grpc as info_grpc
        import thanos_store_pb2 as pb
        import thanos_store_pb2_grpc as store_grpc

        creds = grpc.ssl_channel_credentials(
            root_certificates=open(ca, "rb").read(),
            private_key=open(key, "rb").read(),
            certificate_chain=open(cert, "rb").read(),
        )
        opts = [
            ("grpc.ssl_target_name_override", server_name),
            ("grpc.max_receive_message_length", 256 << 20),
        ]
        with grpc.secure_channel(addr, creds, opts) as ch:
            info = info_grpc.InfoStub(ch).Info(info_pb.InfoRequest(), timeout=30)
            store = store_grpc.StoreStub(ch)
            req = pb.SeriesRequest(
                min_time=int(mint),
                max_time=int(maxt),
                matchers=[pb.LabelMatcher(type=pb.LabelMatcher.RE, name="__name__", value=".+")],
                response_batch_size=batch,
            )
            series, frames = [], {"series": 0, "batch": 0, "warning": 0}
            for frame in store.Series(req, timeout=60):
                kind = frame.WhichOneof("result")
                frames[kind] += 1
                got = [frame.series] if kind == "series" else list(frame.batch.series) if kind == "batch" else []
                for s in got:
                    series.append({
                        "labels": labels(s.labels),
                        "chunks": len(s.chunks),
                        # XOR chunk data starts with a 2-byte big-endian sample count.
                        "samples": sum(int.from_bytes(c.raw.data[:2], "big") for c in s.chunks),
                        "min_time": min((c.min_time for c in s.chunks), default=None),
                        "max_time": max((c.max_time for c in s.chunks), default=None),
                    })
            values = store.LabelValues(
                pb.LabelValuesRequest(label=label, start=int(mint), end=int(maxt)), timeout=30
            )
        print(json.dumps({
            "info": {
                "label_sets": [labels(z.labels) for z in info.label_sets],
                "component_type": info.ComponentType,
                "store": {
                    "present": info.HasField("store"),
                    "min_time": info.store.min_time,
                    "max_time": info.store.max_time,
                    "supports_without_replica_labels": info.store.supports_without_replica_labels,
                },
                "metric_metadata": info.HasField("metric_metadata"),
            },
            "series": series,
            "frames": frames,
            "label_values": list(values.values),
        }))


if __name__ == "__main__":
    main()
