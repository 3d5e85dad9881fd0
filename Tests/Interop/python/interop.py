#!/usr/bin/env python3
"""Interop check of the Berth agent against the reference gRPC stack (grpcio).

Usage:
    python3 Tests/Interop/python/interop.py unix:///path/to/agent.sock
    python3 Tests/Interop/python/interop.py 127.0.0.1:PORT

Generates Python stubs from the repository's proto/ directory with
grpc_tools.protoc into a temporary directory (nothing is written to the
source tree), then calls the agent and checks:

  - Node.Version returns a non-empty version and api_version;
  - Node.Info reports cpus > 0 and a cgroup mode other than UNSPECIFIED;
  - Node.WatchUsage(count=3, interval_ms=100) streams exactly 3 messages,
    sequence 1, 2, 3, then ends with OK;
  - Volumes.List answers OK;
  - a method the agent does not have fails with UNIMPLEMENTED;
  - Node.WatchUsage(count=0) with a 300 ms deadline ends with
    DEADLINE_EXCEEDED.

Prints one line per check; exits 0 if all passed, 1 otherwise.
"""

import importlib
import os
import shutil
import sys
import tempfile
import time

import grpc
import grpc_tools
from grpc_tools import protoc

REPO_ROOT = os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
)
PROTO_ROOT = os.path.join(REPO_ROOT, "proto")
PROTO_PACKAGE_DIR = os.path.join("berth", "agent", "v1")
TIMEOUT_SECONDS = 10


class CheckFailed(Exception):
    pass


def generate_stubs(out_dir):
    """Runs grpc_tools.protoc on every .proto under proto/berth/agent/v1."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    source_dir = os.path.join(PROTO_ROOT, PROTO_PACKAGE_DIR)
    protos = sorted(
        os.path.join(PROTO_PACKAGE_DIR, name)
        for name in os.listdir(source_dir)
        if name.endswith(".proto")
    )
    if not protos:
        raise CheckFailed(f"no .proto files in {source_dir}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise CheckFailed("grpc_tools.protoc failed")
    # The generated modules import each other as berth.agent.v1.*; make
    # the directories packages for older Pythons and tools.
    for parts in (("berth",), ("berth", "agent"), ("berth", "agent", "v1")):
        open(os.path.join(out_dir, *parts, "__init__.py"), "a").close()


def check(condition, what):
    if not condition:
        raise CheckFailed(what)


def run(address):
    node_pb2 = importlib.import_module("berth.agent.v1.node_pb2")
    node_grpc = importlib.import_module("berth.agent.v1.node_pb2_grpc")
    volumes_pb2 = importlib.import_module("berth.agent.v1.volumes_pb2")
    volumes_grpc = importlib.import_module("berth.agent.v1.volumes_pb2_grpc")

    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=TIMEOUT_SECONDS)
        except grpc.FutureTimeoutError:
            raise CheckFailed(f"cannot connect to {address}") from None
        node = node_grpc.NodeStub(channel)
        volumes = volumes_grpc.VolumesStub(channel)

        # Node.Version
        response = node.Version(node_pb2.GetVersionRequest(), timeout=TIMEOUT_SECONDS)
        version = response.version
        check(version.version != "", "Version: empty version")
        check(version.api_version != "", "Version: empty api_version")
        print(
            f"ok   Node.Version version={version.version} "
            f"api_version={version.api_version} "
            f"nghttp2_version={version.nghttp2_version}"
        )

        # Node.Info
        info = node.Info(node_pb2.GetNodeInfoRequest(), timeout=TIMEOUT_SECONDS).info
        check(info.capacity.cpus > 0, f"Info: capacity.cpus={info.capacity.cpus}")
        check(
            info.cgroup_mode != node_pb2.CGROUP_MODE_UNSPECIFIED,
            "Info: cgroup_mode is UNSPECIFIED",
        )
        check(info.hostname != "", "Info: empty hostname")
        print(
            f"ok   Node.Info hostname={info.hostname} "
            f"cpus={info.capacity.cpus} memory_bytes={info.capacity.memory_bytes} "
            f"cgroup_mode={node_pb2.CgroupMode.Name(info.cgroup_mode)}"
        )

        # Node.WatchUsage, count=3
        stream = node.WatchUsage(
            node_pb2.WatchNodeUsageRequest(interval_ms=100, count=3),
            timeout=TIMEOUT_SECONDS,
        )
        sequences = [usage.sequence for usage in stream]
        check(stream.code() == grpc.StatusCode.OK, f"WatchUsage: status {stream.code()}")
        check(sequences == [1, 2, 3], f"WatchUsage: sequences {sequences}, want [1, 2, 3]")
        print(f"ok   Node.WatchUsage count=3 sequences={sequences}")

        # Volumes.List
        listed = volumes.List(volumes_pb2.ListVolumesRequest(), timeout=TIMEOUT_SECONDS)
        print(f"ok   Volumes.List volumes={len(listed.volumes)}")

        # A method the agent does not have
        unknown = channel.unary_unary(
            "/berth.agent.v1.Volumes/NoSuchMethod",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        try:
            unknown(b"", timeout=TIMEOUT_SECONDS)
        except grpc.RpcError as error:
            check(
                error.code() == grpc.StatusCode.UNIMPLEMENTED,
                f"Volumes/NoSuchMethod: status {error.code()}, want UNIMPLEMENTED",
            )
            print(f"ok   Volumes/NoSuchMethod status=UNIMPLEMENTED message={error.details()}")
        else:
            raise CheckFailed("Volumes/NoSuchMethod succeeded, want UNIMPLEMENTED")

        # Node.WatchUsage, count=0 (endless), 300 ms deadline
        started = time.monotonic()
        received = 0
        try:
            for _ in node.WatchUsage(
                node_pb2.WatchNodeUsageRequest(interval_ms=100, count=0), timeout=0.3
            ):
                received += 1
        except grpc.RpcError as error:
            elapsed = time.monotonic() - started
            check(
                error.code() == grpc.StatusCode.DEADLINE_EXCEEDED,
                f"WatchUsage deadline: status {error.code()}, want DEADLINE_EXCEEDED",
            )
            check(elapsed < 5, f"WatchUsage deadline: ended after {elapsed:.2f} s")
            print(
                f"ok   Node.WatchUsage count=0 timeout=300ms status=DEADLINE_EXCEEDED "
                f"messages={received} elapsed={elapsed:.2f}s"
            )
        else:
            raise CheckFailed("WatchUsage with count=0 ended without an error")

        # The channel still works after the deadline.
        response = node.Version(node_pb2.GetVersionRequest(), timeout=TIMEOUT_SECONDS)
        check(response.version.version != "", "Version after deadline: empty version")
        print("ok   Node.Version after deadline")


def main():
    if len(sys.argv) != 2:
        print(f"usage: {sys.argv[0]} unix:///path/to/agent.sock | HOST:PORT", file=sys.stderr)
        return 2
    address = sys.argv[1]
    if address.startswith("tcp://"):
        address = address[len("tcp://"):]

    stub_dir = tempfile.mkdtemp(prefix="berth-interop-py-")
    try:
        generate_stubs(stub_dir)
        sys.path.insert(0, stub_dir)
        sys.dont_write_bytecode = True
        run(address)
    except CheckFailed as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        return 1
    except grpc.RpcError as error:
        print(f"FAIL unexpected RPC error: {error.code()}: {error.details()}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(stub_dir, ignore_errors=True)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
