#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseLog

/// One plaintext connection to a backend. While serving a request it belongs
/// to a client connection; between requests it waits in the worker's pool.
final class BackendConnection {
    let bev: OpaquePointer
    let poolKey: String
    /// The client being served; nil while idle in the pool.
    var client: ClientConnection?
    private(set) var connected = false
    /// Taken from the pool (so a failure before any response byte may be a stale keep-alive).
    var reused = false
    var idleSince = 0.0
    private weak var pool: BackendPool?
    private(set) var closed = false

    var input: OpaquePointer { bufferevent_get_input(bev) }
    var output: OpaquePointer { bufferevent_get_output(bev) }

    private init(bev: OpaquePointer, poolKey: String) {
        self.bev = bev
        self.poolKey = poolKey
    }

    /// Starts a non-blocking connect; nil if it failed at once.
    static func connect(base: OpaquePointer, to address: SocketAddress, poolKey: String) -> BackendConnection? {
        guard let bev = bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue | BEV_OPT_DEFER_CALLBACKS.rawValue)) else {
            return nil
        }
        let started = address.withSockaddr { bufferevent_socket_connect(bev, $0, Int32($1)) }
        guard started == 0 else {
            bufferevent_free(bev)
            return nil
        }
        if address.family != AF_UNIX {
            var one: Int32 = 1
            _ = setsockopt(bufferevent_getfd(bev), Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let b = BackendConnection(bev: bev, poolKey: poolKey)
        Callbacks.install(backend: b, bev: bev)
        bufferevent_setwatermark(bev, Int16(EV_READ), 0, ProxyBuffers.readHighWater)
        bufferevent_setwatermark(bev, Int16(EV_WRITE), ProxyBuffers.writeLowWater, 0)
        ProxyBuffers.widen(bev)
        _ = bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
        return b
    }

    func readable() {
        if let client { client.backendReadable(self) } else { idleActivity() }
    }

    func writable() {
        client?.backendWritable(self)
    }

    func event(_ what: Int16) {
        if what & Int16(BEV_EVENT_CONNECTED) != 0 {
            connected = true
            client?.backendConnected(self)
            return
        }
        if let client { client.backendFailed(self, eof: what & Int16(BEV_EVENT_EOF) != 0) } else { idleActivity() }
    }

    /// An idle pooled connection must stay silent: data or EOF means the
    /// backend closed or misbehaved, so it can never be reused.
    private func idleActivity() {
        pool?.remove(self)
        close()
    }

    func parked(in pool: BackendPool, now: Double) {
        self.pool = pool
        client = nil
        idleSince = now
    }

    func close() {
        guard !closed else { return }
        closed = true
        client = nil
        bufferevent_free(bev)
    }
}

/// Idle keep-alive connections per backend, per worker (no locks: each worker
/// thread owns its pool).
final class BackendPool {
    private var idle: [String: [BackendConnection]] = [:]
    /// Per backend; enough for a busy site's concurrency on one worker.
    let maxIdlePerBackend = 128
    /// Older idle connections are closed rather than risked.
    let maxIdleSeconds = 30.0

    func take(_ key: String, now: Double) -> BackendConnection? {
        while var list = idle[key], let conn = list.popLast() {
            idle[key] = list
            if now - conn.idleSince <= maxIdleSeconds {
                conn.reused = true
                return conn
            }
            conn.close()
        }
        return nil
    }

    /// The caller guarantees the previous response was read completely.
    func put(_ conn: BackendConnection, now: Double) {
        guard conn.input.evLength == 0, conn.output.evLength == 0 else {
            conn.close()
            return
        }
        var list = idle[conn.poolKey, default: []]
        guard list.count < maxIdlePerBackend else {
            conn.close()
            return
        }
        conn.parked(in: self, now: now)
        list.append(conn)
        idle[conn.poolKey] = list
    }

    func remove(_ conn: BackendConnection) {
        guard var list = idle[conn.poolKey], let i = list.firstIndex(where: { $0 === conn }) else { return }
        list.remove(at: i)
        idle[conn.poolKey] = list
    }

    /// Closes connections idle for too long (called from the worker's tick).
    func expire(now: Double) {
        for (key, list) in idle {
            let keep = list.filter { now - $0.idleSince <= maxIdleSeconds }
            if keep.count != list.count {
                for c in list where now - c.idleSince > maxIdleSeconds { c.close() }
                idle[key] = keep
            }
        }
    }

    func closeAll() {
        for list in idle.values { for c in list { c.close() } }
        idle.removeAll()
    }
}

enum ProxyBuffers {
    /// Read pauses when this much is buffered and not yet forwarded.
    static let readHighWater = 256 * 1024
    /// The other side stops reading while an output buffer holds more than this.
    static let writeHighWater = 256 * 1024
    /// ...and starts again once it has drained below this, so the writer never
    /// runs dry while the reader wakes up (resuming only at empty stalls bulk
    /// transfers into fill-then-drain rounds).
    static let writeLowWater = 64 * 1024
    /// libevent moves at most 16 KiB per read or write callback by default:
    /// for bulk bodies that is one epoll round trip (and, on the TLS side, one
    /// 4-16 KiB record per chain element) per 16 KiB.
    static let singleTransfer = 256 * 1024

    static func widen(_ bev: OpaquePointer) {
        _ = bufferevent_set_max_single_read(bev, singleTransfer)
        _ = bufferevent_set_max_single_write(bev, singleTransfer)
    }
}
