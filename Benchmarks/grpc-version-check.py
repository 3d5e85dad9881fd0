#!/usr/bin/env python3
"""Calls berth.agent.v1.Node/Version with grpcio (a real gRPC client) and
checks that the status is OK: h2load only sees HTTP statuses, not grpc-status.

Usage: grpc-version-check.py HOST:PORT STUBS_DIR [CONCURRENT_CALLS]

Generates Python stubs from ../proto into STUBS_DIR if they are not there
yet. Makes one call, then CONCURRENT_CALLS (default 0) more in flight at
once on one channel; every one must end with OK and the same response.
Prints one line: "ok ADDRESS status=OK calls=N bytes=B sha256=H version=..."
and exits 0, or prints the failure and exits 1.
"""

import hashlib
import importlib
import os
import sys

import grpc
import grpc_tools
from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.join(HERE, "..", "proto")
PACKAGE_DIR = os.path.join("berth", "agent", "v1")
TIMEOUT = 10


def generate(out_dir):
    marker = os.path.join(out_dir, PACKAGE_DIR, "node_pb2_grpc.py")
    if os.path.exists(marker):
        return
    os.makedirs(out_dir, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    protos = sorted(
        os.path.join(PACKAGE_DIR, name)
        for name in os.listdir(os.path.join(PROTO_ROOT, PACKAGE_DIR))
        if name.endswith(".proto")
    )
    args = ["grpc_tools.protoc", f"--proto_path={PROTO_ROOT}", f"--proto_path={well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        sys.exit("grpc_tools.protoc failed")
    for parts in (("berth",), ("berth", "agent"), ("berth", "agent", "v1")):
        open(os.path.join(out_dir, *parts, "__init__.py"), "a").close()


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    address, stubs = sys.argv[1], sys.argv[2]
    concurrent = int(sys.argv[3]) if len(sys.argv) == 4 else 0
    generate(stubs)
    sys.path.insert(0, stubs)
    node_pb2 = importlib.import_module("berth.agent.v1.node_pb2")
    node_grpc = importlib.import_module("berth.agent.v1.node_pb2_grpc")

    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
        except grpc.FutureTimeoutError:
            print(f"FAIL {address}: cannot connect")
            return 1
        stub = node_grpc.NodeStub(channel)
        try:
            response, call = stub.Version.with_call(node_pb2.GetVersionRequest(), timeout=TIMEOUT)
        except grpc.RpcError as error:
            print(f"FAIL {address} status={error.code()} {error.details()}")
            return 1
        if call.code() != grpc.StatusCode.OK:
            print(f"FAIL {address} status={call.code()}")
            return 1
        body = response.SerializeToString()
        digest = hashlib.sha256(body).hexdigest()[:16]
        futures = [stub.Version.future(node_pb2.GetVersionRequest(), timeout=TIMEOUT * 3)
                   for _ in range(concurrent)]
        for future in futures:
            try:
                other = future.result()
            except grpc.RpcError as error:
                print(f"FAIL {address} concurrent call status={error.code()} {error.details()}")
                return 1
            if future.code() != grpc.StatusCode.OK or other.SerializeToString() != body:
                print(f"FAIL {address} concurrent call status={future.code()} or a different response")
                return 1
        v = response.version
        print(f"ok {address} status=OK calls={1 + concurrent} bytes={len(body)} sha256={digest} "
              f"version={v.version} api={v.api_version} nghttp2={v.nghttp2_version} swift={v.swift_version}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
