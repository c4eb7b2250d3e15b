"""A real gRPC client (grpcio) for the end-to-end tests: makes one call and prints what came
back as JSON: the status code, its details, the answers, and the trailing metadata.

Usage: client.py TARGET METHOD REQUEST [--ca FILE] [--timeout SECONDS] [--metadata K=V]...
METHOD is a full path (/test.Echo/Unary); a method of test.Echo named Stream is called as
server streaming.
"""

import argparse
import json

import grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("method")
    ap.add_argument("request")
    ap.add_argument("--ca")
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--metadata", action="append", default=[])
    args = ap.parse_args()
    if args.ca:
        with open(args.ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.target, creds,
                                      options=[("grpc.ssl_target_name_override", "localhost"),
                                               ("grpc.default_authority", "localhost")])
    else:
        channel = grpc.insecure_channel(args.target)
    metadata = [tuple(m.split("=", 1)) for m in args.metadata]
    out = {"answers": []}
    try:
        if args.method.endswith("/Stream"):
            call = channel.unary_stream(args.method)(args.request.encode(), timeout=args.timeout,
                                                     metadata=metadata)
            for answer in call:
                out["answers"].append(answer.decode())
        else:
            answer, call = channel.unary_unary(args.method).with_call(
                args.request.encode(), timeout=args.timeout, metadata=metadata)
            out["answers"].append(answer.decode())
        out["code"] = call.code().value[0]
        out["details"] = call.details() or ""
        out["trailing"] = {k: v for k, v in (call.trailing_metadata() or ())}
    except grpc.RpcError as e:
        out["code"] = e.code().value[0]
        out["details"] = e.details() or ""
        out["trailing"] = {k: v for k, v in (e.trailing_metadata() or ())}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
