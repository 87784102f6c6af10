import GatehouseConfig
import GatehouseHTTP
import GatehouseLog
import GatehouseTLS

/// Everything the workers need from one configuration snapshot, prepared off
/// the event loops and then only read: config → snapshot → runtime → workers.
public final class ProxyRuntime: Sendable {
    public let snapshot: ConfigSnapshot
    public let tls: TLSServer
    let routes: [Route]
    let router: RequestRouter
    let limits: HTTPLimits

    /// A class: an exchange holds its route, and copying a reference costs one
    /// retain where copying the domain's strings and arrays cost many per request.
    final class Route: Sendable {
        let domain: DomainConfig
        /// nil when the backend's host did not resolve at load time (502s).
        let backend: SocketAddress?
        /// Pool key: connections are shared by domains with the same backend.
        let poolKey: String
        /// Pre-rendered HSTS value, nil when disabled.
        let hsts: [UInt8]?

        init(domain: DomainConfig, backend: SocketAddress?, poolKey: String, hsts: [UInt8]?) {
            self.domain = domain
            self.backend = backend
            self.poolKey = poolKey
            self.hsts = hsts
        }
    }

    /// `handshakes[i]` belongs to `snapshot.domains[i]`.
    public let handshakes: [DomainHandshakes]

    /// `previous`: the runtime being replaced, whose per-domain counters carry
    /// over by primary name.
    public init(snapshot: ConfigSnapshot, tls: TLSServer, previous: ProxyRuntime? = nil) {
        var carried: [String: DomainHandshakes] = [:]
        if let previous {
            carried.reserveCapacity(previous.handshakes.count)
            for (d, h) in zip(previous.snapshot.domains, previous.handshakes) { carried[d.primaryName] = h }
        }
        self.handshakes = snapshot.domains.map { carried[$0.primaryName] ?? DomainHandshakes() }
        self.snapshot = snapshot
        self.tls = tls
        self.router = RequestRouter(names: snapshot.names, domains: snapshot.domains, acme: tls.acme, store: tls.store)
        self.limits = HTTPLimits(
            maxRequestLineBytes: snapshot.limits.maxRequestLineBytes,
            maxHeaderBytes: snapshot.limits.maxHeaderBytes,
            maxHeaderCount: snapshot.limits.maxHeaderCount)
        // Domains share backends and HSTS values: resolve and render each once,
        // so 100,000 domains do not hold 100,000 copies.
        var backends: [Backend: (address: SocketAddress?, key: String)] = [:]
        var hstsValues: [String: [UInt8]] = [:]
        self.routes = snapshot.domains.map { domain in
            let target: (address: SocketAddress?, key: String)
            if let known = backends[domain.backend] {
                target = known
            } else {
                let address: SocketAddress?
                switch domain.backend {
                case .tcp(let host, let port): address = SocketAddress(host: host, port: port)
                case .unix(let path): address = SocketAddress(unixPath: path)
                }
                target = (address, domain.backend.description)
                backends[domain.backend] = target
            }
            if target.address == nil {
                Log.error("\(domain.file): backend: cannot resolve \(domain.backend)")
            }
            var hsts: [UInt8]?
            if let value = domain.hstsHeaderValue {
                if let known = hstsValues[value] {
                    hsts = known
                } else {
                    hsts = Array(value.utf8)
                    hstsValues[value] = hsts
                }
            }
            return Route(domain: domain, backend: target.address, poolKey: target.key, hsts: hsts)
        }
    }
}
