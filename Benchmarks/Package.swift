// swift-tools-version:6.1
// Benchmarks for Berth. A separate package: CI builds the root package only.
// Run ./run-transport-bench from this directory.
import PackageDescription

let package = Package(
    name: "berth-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // Placements per second and binpack quality, of the pure scheduler
        // and through the controller with its SQLite store.
        .executableTarget(
            name: "scheduler-bench",
            dependencies: [
                .product(name: "BerthScheduler", package: "main"),
                .product(name: "BerthController", package: "main"),
                .product(name: "BerthEtcd", package: "main"),
                .product(name: "BerthModel", package: "main"),
                .product(name: "BerthTransport", package: "main"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Failover of controllers on etcd: kill -9 of the leader → the first
        // placement by the next one, over real etcd and controller processes.
        .executableTarget(
            name: "failover-bench",
            dependencies: [
                .product(name: "BerthAPI", package: "main"),
                .product(name: "BerthTransport", package: "main"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        // Serves berth.agent.v1.Node (BerthAgent.NodeService, the agent's own
        // handler) on either Berth's nghttp2 transport or grpc-swift's NIO one.
        .executableTarget(
            name: "transport-bench",
            dependencies: [
                .product(name: "BerthAgent", package: "main"),
                .product(name: "BerthTransport", package: "main"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
