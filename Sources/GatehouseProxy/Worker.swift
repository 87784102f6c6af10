#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import GatehouseConfig
import GatehouseHTTP
import GatehouseLog

/// One event loop: its listeners, its connections and its backend pool. All of
/// it is touched only from the thread running `run()`.
public final class Worker {
    let base: OpaquePointer
    let index: Int
    private(set) var runtime: ProxyRuntime
    private var listeners: [Listener] = []
    let pool = BackendPool()
    public let stats = WorkerStats()
    private(set) var accessLog: AccessLogWriter?
    private var connections: [ObjectIdentifier: ClientConnection] = [:]
    /// Open connections per client (an IPv4 address or an IPv6 /64), kept
    /// only while `max_connections_per_client` is set.
    private var perClient: [[UInt8]: Int] = [:]
    /// Connections still reading their PROXY protocol header.
    private var pendingHeaders: [ObjectIdentifier: ProxyHeaderReader] = [:]
    private(set) var draining = false
    private var tickEvent: OpaquePointer?
    private var graceEvent: OpaquePointer?
    private var acceptPausedUntil = 0.0

    /// Request states of connections that went idle, for the next request.
    private var spareRequestStates: [RequestState] = []
    /// Enough for a burst; the rest are freed (the pool follows concurrency,
    /// not the number of idle connections).
    static let maxSpareRequestStates = 256

    public var openConnections: Int { connections.count }

    func takeRequestState(limits: HTTPLimits) -> RequestState {
        while let spare = spareRequestStates.popLast() {
            // A reload may have changed the limits the parsers enforce.
            if spare.parser.limits == limits { return spare }
        }
        return RequestState(limits: limits)
    }

    func returnRequestState(_ state: RequestState) {
        guard spareRequestStates.count < Self.maxSpareRequestStates else { return }
        state.reset()
        spareRequestStates.append(state)
    }

    public init(index: Int, runtime: ProxyRuntime) throws(ListenError) {
        guard let base = Self.makeBase() else { throw ListenError(description: "event_base_new failed") }
        self.base = base
        self.index = index
        self.runtime = runtime
        accessLog = runtime.snapshot.accessLog.map { AccessLogWriter(settings: $0) }
        for config in runtime.snapshot.listeners {
            do {
                listeners.append(try Listener(worker: self, config: config))
            } catch {
                listeners.removeAll()
                event_base_free(base)
                throw error
            }
        }
        tickEvent = event_new(base, -1, Int16(EV_PERSIST), Callbacks.workerTick, Unmanaged.passUnretained(self).toOpaque())
        var oneSecond = timeval(seconds: 1)
        event_add(tickEvent, &oneSecond)
    }

    /// epoll with libevent's changelist: a read or write interest switched off
    /// and on again within one loop turn (backpressure, TLS writes that drain
    /// and refill) costs no epoll_ctl. Safe here: no descriptor is dup()ed.
    static func makeBase() -> OpaquePointer? {
        guard let config = event_config_new() else { return event_base_new() }
        defer { event_config_free(config) }
        _ = event_config_set_flag(config, Int32(EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST.rawValue))
        return event_base_new_with_config(config) ?? event_base_new()
    }

    deinit {
        listeners.removeAll()
        pool.closeAll()
        if let tickEvent { event_free(tickEvent) }
        if let graceEvent { event_free(graceEvent) }
        event_base_free(base)
    }

    /// Runs the loop until `stop()` or until draining has finished.
    public func run() {
        event_base_dispatch(base)
        accessLog?.flush()
    }

    /// A new connection (while draining: one that was in the accept queue).
    func accept(fd: Int32, address: UnsafePointer<sockaddr>?, listener: Listener) {
        let peer = address.map { SocketAddress.numericHost($0) } ?? Array("-".utf8)
        if listener.settings.proxyProtocol {
            let reader = ProxyHeaderReader(worker: self, fd: fd, listener: listener, peer: peer)
            pendingHeaders[ObjectIdentifier(reader)] = reader
            reader.start(timeout: runtime.snapshot.timeouts.handshake)
            pauseIfFull()
        } else {
            admit(fd: fd, client: peer, listener: listener)
        }
    }

    /// Connections still reading their PROXY header count too.
    private var inFlight: Int { connections.count + pendingHeaders.count }

    private func pauseIfFull() {
        // Accept resumes when connections close; the kernel backlog holds the rest.
        if inFlight >= runtime.snapshot.limits.maxConnections {
            for l in listeners { l.pause() }
        }
    }

    func proxyHeaderDone(_ reader: ProxyHeaderReader, fd: Int32, client: [UInt8]?) {
        pendingHeaders[ObjectIdentifier(reader)] = nil
        if let client, fd >= 0 {
            // Draining too: the balancer already sent this client's bytes.
            admit(fd: fd, client: client, listener: reader.listener)
        } else {
            stats.add(.proxyHeaderErrors)
            resumeIfRoom()
        }
    }

    /// The client address is known (from the socket or a PROXY header).
    private func admit(fd: Int32, client: [UInt8], listener: Listener) {
        let cap = runtime.snapshot.limits.maxConnectionsPerClient
        let capKey = cap > 0 ? ClientKey.of(client) : nil
        if let capKey {
            let open = perClient[capKey, default: 0]
            guard open < cap else {
                stats.refused(.perClientLimit, "per_client_limit: client \(String(decoding: client, as: UTF8.self)) has \(open) connections open (max_connections_per_client); refusing more")
                Glibc.close(fd)
                return
            }
        }
        do {
            let conn = try ClientConnection(worker: self, runtime: runtime, listener: listener.settings, fd: fd,
                                            clientAddress: client, capKey: capKey)
            if let capKey { perClient[capKey, default: 0] += 1 }
            connections[ObjectIdentifier(conn)] = conn
            stats.add(.connectionsAccepted)
            stats.setOpenConnections(connections.count)
        } catch {
            // The connection closed the descriptor.
            Log.error("cannot set up accepted connection: \(error)")
            return
        }
        pauseIfFull()
    }

    func connectionClosed(_ conn: ClientConnection) {
        connections[ObjectIdentifier(conn)] = nil
        if let key = conn.capKey, let n = perClient[key] {
            perClient[key] = n <= 1 ? nil : n - 1
        }
        stats.setOpenConnections(connections.count)
        resumeIfRoom()
    }

    /// A connection (or a PROXY header reader) ended.
    private func resumeIfRoom() {
        if !draining, inFlight < runtime.snapshot.limits.maxConnections, monotonicNow() >= acceptPausedUntil {
            for l in listeners { l.resume() }
        }
        finishDrainIfDone()
    }

    /// The loop ends once draining and nothing is left in flight.
    private func finishDrainIfDone() {
        if draining, inFlight == 0, listeners.isEmpty { event_base_loopbreak(base) }
    }

    func pauseAccepting() {
        acceptPausedUntil = monotonicNow() + 0.1
        for l in listeners { l.pause() }
    }

    func tick() {
        let now = monotonicNow()
        pool.expire(now: now)
        accessLog?.flush()
        if !draining, acceptPausedUntil > 0, now >= acceptPausedUntil,
           inFlight < runtime.snapshot.limits.maxConnections {
            acceptPausedUntil = 0
            for l in listeners { l.resume() }
        }
    }

    /// A reloaded configuration: new connections use it; open ones keep the
    /// runtime they were accepted under. Idle pooled backend connections are
    /// kept, since pool keys are backend addresses.
    public func adopt(_ next: ProxyRuntime) {
        runtime = next
        if accessLog?.settings != next.snapshot.accessLog {
            accessLog = next.snapshot.accessLog.map { AccessLogWriter(settings: $0) }
        }
    }

    /// SIGUSR1, after logrotate moved the file.
    public func reopenAccessLog() {
        accessLog?.reopen()
    }

    /// SIGTERM: connections the kernel already completed (the accept queue)
    /// are taken and served, then the listeners close; idle keep-alive
    /// connections close now, the rest after their response. The loop ends
    /// when nothing is left in flight (or at the drain deadline).
    public func beginDrain(grace: Double = 0) {
        draining = true
        accessLog?.flush()
        pool.closeAll()
        for conn in Array(connections.values) { conn.drain() }
        if grace > 0, !listeners.isEmpty {
            // `stop_grace`: new connections are still taken (and answered with
            // Connection: close) until the balancer has seen /healthz fail.
            graceEvent = event_new(base, -1, 0, Callbacks.workerGraceOver, Unmanaged.passUnretained(self).toOpaque())
            var tv = timeval(seconds: grace)
            event_add(graceEvent, &tv)
        } else {
            closeListeners()
        }
    }

    /// The accept queue is served, then the listening sockets close.
    func closeListeners() {
        for l in listeners {
            l.acceptQueued()
            l.close()
        }
        listeners.removeAll()
        finishDrainIfDone()
    }

    public func stop() {
        event_base_loopbreak(base)
    }
}

extension Worker {
    public var eventBase: OpaquePointer { base }
    public var workerIndex: Int { index }
    public var runtimeTimeouts: TimeoutSettings { runtime.snapshot.timeouts }
}
