"""A real gRPC server (grpcio) for the end-to-end tests, with no generated code: methods
take and return raw bytes.

test.Echo/Unary    answers JSON: the request and the metadata the server received
test.Echo/Limited  the same (a route with a rate limit in front)
test.Echo/Stream   server streaming: as many messages as the request's number
test.Echo/Slow     answers after the request's number of seconds
test.Echo/SetServing  b"1" or b"0": what grpc.health.v1.Health/Check answers
grpc.health.v1.Health/Check  SERVING or NOT_SERVING

Usage: server.py [--tls CERT KEY]; prints the port it listens on, then serves until killed.
"""

import json
import sys
import threading
import time
from concurrent import futures

import grpc

serving = threading.Event()
serving.set()


def unary(request, context):
    metadata = {k: v for k, v in context.invocation_metadata() if not k.endswith("-bin")}
    return json.dumps({"request": request.decode(), "metadata": metadata}).encode()


def stream(request, context):
    for i in range(int(request.decode())):
        yield f"item-{i}".encode()


def slow(request, context):
    time.sleep(float(request.decode()))
    return b"late"


def set_serving(request, context):
    if request == b"1":
        serving.set()
    else:
        serving.clear()
    return b"ok"


def health_check(request, context):
    # HealthCheckResponse { status = 1 (SERVING) | 2 (NOT_SERVING) }
    return b"\x08\x01" if serving.is_set() else b"\x08\x02"


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    unary_method = grpc.unary_unary_rpc_method_handler
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("test.Echo", {
            "Unary": unary_method(unary),
            "Limited": unary_method(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Slow": unary_method(slow),
            "SetServing": unary_method(set_serving),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": unary_method(health_check),
        }),
    ))
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        with open(sys.argv[2], "rb") as c, open(sys.argv[3], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
