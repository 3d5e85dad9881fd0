// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "berth",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "berth-agent", targets: ["berth-agent"]),
        .executable(name: "berth", targets: ["berth"]),
        .executable(name: "berth-cli", targets: ["berth-cli"]),
        .executable(name: "berth-shim", targets: ["berth-shim"]),
        .executable(name: "berth-init", targets: ["berth-init"]),
        .executable(name: "berth-controller", targets: ["berth-controller"]),
        .library(name: "BerthModel", targets: ["BerthModel"]),
        .library(name: "BerthAPI", targets: ["BerthAPI"]),
        .library(name: "BerthTransport", targets: ["BerthTransport"]),
        .library(name: "BerthAgent", targets: ["BerthAgent"]),
        .library(name: "BerthScheduler", targets: ["BerthScheduler"]),
        .library(name: "BerthController", targets: ["BerthController"]),
        .library(name: "BerthEtcd", targets: ["BerthEtcd"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // No traits: the default BinaryDelimitedStreams trait imports
        // Foundation, which the CLI otherwise does without.
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0", traits: []),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        // Codable + Sendable value types shared by every daemon. Foundation only.
        .target(name: "BerthModel", swiftSettings: swiftSettings),

        // nghttp2, the HTTP/2 framing library, through pkg-config.
        .systemLibrary(
            name: "CNghttp2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),

        // libseccomp, which compiles seccomp profiles to BPF.
        .systemLibrary(
            name: "CSeccomp",
            pkgConfig: "libseccomp",
            providers: [.apt(["libseccomp-dev"])]
        ),

        // Generated protobuf and gRPC code, plus conversions to and from BerthModel.
        .target(
            name: "BerthAPI",
            dependencies: [
                "BerthModel",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Generated/README.md"],
            swiftSettings: swiftSettings
        ),

        // gRPC over HTTP/2 framed by nghttp2, on SwiftNIO sockets (TCP and unix).
        .target(
            name: "BerthTransport",
            dependencies: [
                "CNghttp2",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                // Not swift-certificates: it imports Foundation, which the CLI does without.
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // C, by job. Small system calls the Swift Glibc module does not show
        // or glibc does not wrap (pipes, spawning, descriptor passing, sealed
        // copies, terminals, pidfds, epoll/inotify/eventfd, xattrs, openat2,
        // the cgroup v2 device program): used by BerthLinux and the shim only.
        .target(name: "CBerthSyscalls"),
        // Network namespaces as files and rtnetlink (veth pairs, links): used by BerthLinux only.
        .target(name: "CBerthNetlink"),
        // The container child: clone3, mounts, pivot_root, capabilities,
        // seccomp load, execve. It runs system calls only. Used by the shim only.
        .target(name: "CBerthContainer", dependencies: ["CBerthSyscalls"]),

        // The agent↔shim formats: pure Swift, no Foundation, no C.
        .target(name: "BerthShimProtocol", swiftSettings: swiftSettings),

        // One small supervisor per container; outlives the agent.
        .executableTarget(
            name: "berth-shim",
            dependencies: ["BerthShimProtocol", "CBerthContainer", "CBerthSyscalls"],
            swiftSettings: swiftSettings,
            // One per container, started on every container start: a static
            // executable loads no shared library (about 1.5 ms less to start).
            linkerSettings: [.unsafeFlags(["-static-executable", "-use-ld=lld"])]
        ),

        // PID 1 of a container run with --init: reaps, forwards signals,
        // exits as its child does. C, static, tiny: the agent runs it from a
        // sealed copy in memory, never from the file.
        .executableTarget(
            name: "berth-init",
            cSettings: [.unsafeFlags(["-Wall", "-Wextra"])],
            linkerSettings: [.unsafeFlags(["-nostartfiles", "-static-executable"])]
        ),

        // The one Swift layer that calls the kernel.
        .target(
            name: "BerthLinux",
            dependencies: ["CBerthSyscalls", "CBerthNetlink"],
            swiftSettings: swiftSettings
        ),

        // Cgroup drivers (v1, v2) behind one protocol, and mode detection.
        .target(
            name: "BerthCgroups",
            dependencies: ["BerthModel", "BerthLinux"],
            swiftSettings: swiftSettings
        ),

        // zlib, for gzip-compressed layers.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),

        // zstd, for zstd-compressed layers.
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),

        // Images: content store, safe layer unpack, import, registry pulls.
        .target(
            name: "BerthImages",
            dependencies: [
                "BerthModel",
                "BerthLinux",
                "CZlib",
                "CZstd",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // The container runtime: planning a container's start (mounts,
        // identity, capabilities), seccomp compiled with libseccomp, the shim.
        .target(
            name: "BerthRuntime",
            dependencies: [
                "BerthModel",
                "BerthLinux",
                "BerthCgroups",
                "BerthShimProtocol",
                "CSeccomp",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // Container networking: bridges, veth pairs, namespaces, addresses,
        // the nftables table for published ports, the embedded resolver.
        .target(
            name: "BerthNetwork",
            dependencies: [
                "BerthModel",
                "BerthLinux",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // Placement of replicas on nodes: filters, scores, reasons. Pure.
        .target(
            name: "BerthScheduler",
            dependencies: ["BerthModel"],
            swiftSettings: swiftSettings
        ),

        // etcd's v3 API (generated from etcd's protos) and Berth's client of
        // it over BerthTransport: KV, transactions, watches, leases, elections.
        .target(
            name: "BerthEtcd",
            dependencies: [
                "BerthModel",
                "BerthTransport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // The controller's core: its store, the cluster's nodes, its service adapters.
        .target(
            name: "BerthController",
            dependencies: [
                "BerthModel",
                "BerthAPI",
                "BerthEtcd",
                "BerthLinux",
                "BerthScheduler",
                "BerthTransport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),

        // The agent's core and its thin gRPC service adapters.
        .target(
            name: "BerthAgent",
            dependencies: [
                "BerthModel",
                "BerthAPI",
                "BerthCgroups",
                "BerthImages",
                "BerthLinux",
                "BerthNetwork",
                "BerthRuntime",
                "BerthShimProtocol",
                .product(name: "GRDB", package: "GRDB.swift"),
                "BerthTransport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),

        // Go's text/template and docker's --format on top of it: pure, no
        // Foundation, for the CLI's output.
        .target(name: "BerthTemplate", swiftSettings: swiftSettings),

        // The command line, docker's spelling.
        .target(
            name: "BerthCLI",
            dependencies: [
                "BerthModel",
                "BerthTemplate",
                "BerthLinux",
                "BerthAPI",
                "BerthTransport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),

        // Helpers shared by tests: a raw HTTP/2 client for hostile input, a
        // manual clock, an agent in memory for the controller's reconciler.
        .target(
            name: "BerthTesting",
            dependencies: [
                "BerthController",
                "BerthEtcd",
                "BerthLinux",
                "BerthModel",
                "BerthRuntime",
                "BerthTransport",
                "CNghttp2",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "berth-controller",
            dependencies: [
                "BerthController",
                "BerthEtcd",
                "BerthModel",
                "BerthTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "berth-agent",
            dependencies: [
                "BerthAgent",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // `berth`: a foreground `berth run` on a local agent, in C (one Run
        // call, with nghttp2 and protobuf-c, in under a millisecond of its
        // own); every other command goes to berth-cli by exec.
        .executableTarget(
            name: "berth",
            exclude: ["generated/README.md"],
            cSettings: [.headerSearchPath("generated"), .unsafeFlags(["-Wall", "-Wextra"])],
            // Static, and without the Swift runtime's start-up files that
            // swiftc links into every executable (this one has no Swift):
            // nothing to load, nothing to initialise (0.7 ms for a whole run).
            linkerSettings: [.linkedLibrary("nghttp2"), .linkedLibrary("protobuf-c"), .unsafeFlags(["-nostartfiles", "-static-executable"])]
        ),
        // The full command line.
        .executableTarget(
            name: "berth-cli",
            dependencies: ["BerthCLI"],
            swiftSettings: swiftSettings,
            // A CLI's start-up is paid on every command: the Swift runtime is
            // linked statically (resolving its symbols at load time cost more
            // than the command itself) and everything it imports uses
            // FoundationEssentials, not Foundation, so that neither ICU nor
            // Foundation's thousands of protocol conformances are loaded and
            // searched. lld, because it links FoundationEssentials' archive
            // without gold's link-time warnings.
            linkerSettings: [.unsafeFlags(["-static-stdlib", "-use-ld=lld", "-Xclang-linker", "-no-pie"]), .linkedLibrary("_FoundationCollections"), .linkedLibrary("_FoundationCShims")]
        ),

        .testTarget(
            name: "BerthModelTests",
            dependencies: ["BerthModel"],
            resources: [.copy("Golden")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthNetworkTests",
            dependencies: [
                "BerthNetwork", "BerthModel",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthTemplateTests",
            dependencies: ["BerthTemplate"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthSchedulerTests",
            dependencies: ["BerthScheduler", "BerthModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthControllerTests",
            dependencies: ["BerthController", "BerthEtcd", "BerthScheduler", "BerthModel", "BerthTesting", "BerthTransport", "BerthLinux"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthEtcdTests",
            dependencies: ["BerthEtcd", "BerthModel", "BerthTesting", "BerthTransport", "BerthLinux"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthCgroupsTests",
            dependencies: ["BerthCgroups", "BerthLinux", "BerthModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthImagesTests",
            dependencies: ["BerthImages", "BerthLinux", "BerthModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthAPITests",
            dependencies: ["BerthAPI", "BerthLinux", "BerthModel"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthTransportTests",
            dependencies: [
                "BerthTransport",
                "BerthTesting",
                "CNghttp2",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "BerthAgentTests",
            dependencies: [
                "BerthAgent",
                "BerthAPI",
                "BerthCgroups",
                "BerthController",
                "BerthEtcd",
                "BerthImages",
                "BerthLinux",
                "BerthModel",
                "BerthShimProtocol",
                "BerthTesting",
                "BerthTransport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
