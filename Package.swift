// swift-tools-version:6.0
import PackageDescription

/// The request path's modules, in release builds only: Swift's dynamic
/// exclusivity checks cost about 9 % of the instructions per HTTP/2 request
/// (callgrind). Debug builds, which every test runs, keep them.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Gatehouse",
    products: [
        .executable(name: "gatehouse", targets: ["gatehouse"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        // C edges: system libraries and the macros Swift cannot import.
        .systemLibrary(
            name: "CLibevent",
            pkgConfig: "libevent_openssl",
            providers: [.apt(["libevent-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CNghttp2",
            pkgConfig: "libnghttp2",
            providers: [.apt(["libnghttp2-dev"])]
        ),
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .target(name: "CShims", dependencies: ["COpenSSL", "CLibevent"]),

        // Pure logic.
        .target(name: "GatehouseLog"),
        .target(name: "GatehouseHTTP", swiftSettings: hotPath),
        .target(
            name: "GatehouseConfig",
            dependencies: ["GatehouseLog", .product(name: "TOMLKit", package: "TOMLKit")]
        ),

        // I/O.
        .target(
            name: "GatehouseTLS",
            dependencies: ["COpenSSL", "CShims", "GatehouseConfig", "GatehouseLog"]
        ),
        // RFC 8555 building blocks; no proxy code, no I/O but its storage files.
        .target(name: "GatehouseACME", dependencies: ["COpenSSL", "CCurl"]),
        .target(
            name: "GatehouseProxy",
            dependencies: ["CLibevent", "COpenSSL", "CNghttp2", "CShims", "GatehouseHTTP", "GatehouseConfig", "GatehouseTLS", "GatehouseLog"],
            swiftSettings: hotPath
        ),
        .target(
            name: "GatehouseServer",
            dependencies: ["CLibevent", "CShims", "GatehouseConfig", "GatehouseTLS", "GatehouseProxy", "GatehouseLog", "GatehouseACME"]
        ),
        .executableTarget(
            name: "gatehouse",
            dependencies: [
                "GatehouseServer", "GatehouseConfig", "GatehouseTLS", "GatehouseLog",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Parser/rewrite micro-benchmark (scripts/bench); GatehouseHTTP only.
        .executableTarget(name: "gatehouse-microbench", dependencies: ["GatehouseHTTP"]),

        .testTarget(name: "GatehouseHTTPTests", dependencies: ["GatehouseHTTP"]),
        .testTarget(name: "GatehouseConfigTests", dependencies: ["GatehouseConfig"]),
        .testTarget(name: "GatehouseTLSTests", dependencies: ["GatehouseTLS", "GatehouseConfig", "COpenSSL"]),
        .testTarget(name: "GatehouseProxyTests", dependencies: ["GatehouseProxy", "GatehouseTLS"]),
        .testTarget(name: "GatehouseACMETests", dependencies: ["GatehouseACME", "COpenSSL"]),
    ]
)
