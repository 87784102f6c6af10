#if canImport(Glibc)
import Glibc
#endif
import CLibevent

/// One plaintext connection to a backend. While serving a request it belongs
/// to a client connection; between requests it waits in the worker's pool.
///
/// A socket, two evbuffers and two events rather than a bufferevent: libevent
/// 2.1's `evbuffer_read` reads at most 4 KiB per call (after a FIONREAD
/// ioctl), one call per wake-up, and a socket bufferevent writes only in the
/// loop iteration after data was queued (arming and disarming EV_WRITE, two
/// epoll_ctl per request). Here a wake-up reads up to `ProxyBuffers.singleTransfer`,
/// `send()` writes at once, and EV_WRITE is armed only while the socket is full.
final class BackendConnection {
    let poolKey: String
    let input: OpaquePointer
    let output: OpaquePointer
    /// The exchange being served; nil while idle in the pool.
    var exchange: Exchange?
    private(set) var connected = false
    /// Taken from the pool (so a failure before any response byte may be a stale keep-alive).
    var reused = false
    var idleSince = 0.0
    private weak var pool: BackendPool?
    private(set) var closed = false

    private let fd: Int32
    private var readEvent: OpaquePointer?
    private var writeEvent: OpaquePointer?
    private var readPaused = false
    private var writeArmed = false
    /// A write failed inside `send()`; reported from the event loop, never
    /// from inside the caller.
    private var pendingError = false
    /// Set while flushing after the client left a tunnel (see `closeAfterFlush`).
    private var closingAfterFlush: Unmanaged<BackendConnection>?

    private init(fd: Int32, poolKey: String) {
        self.fd = fd
        self.poolKey = poolKey
        input = evbuffer_new()
        output = evbuffer_new()
    }

    deinit {
        close()
        evbuffer_free(input)
        evbuffer_free(output)
    }

    /// Starts a non-blocking connect; nil if it failed at once.
    static func connect(base: OpaquePointer, to address: SocketAddress, poolKey: String) -> BackendConnection? {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue | SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        if address.family != AF_UNIX {
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        // A unix socket says EAGAIN when the backend's backlog is full: a failure.
        let started = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        guard started == 0 || errno == EINPROGRESS else {
            Glibc.close(fd)
            return nil
        }
        let b = BackendConnection(fd: fd, poolKey: poolKey)
        let context = Unmanaged.passUnretained(b).toOpaque()
        b.readEvent = event_new(base, fd, Int16(EV_READ | EV_PERSIST), Callbacks.backendIO, context)
        b.writeEvent = event_new(base, fd, Int16(EV_WRITE | EV_PERSIST), Callbacks.backendIO, context)
        guard b.readEvent != nil, b.writeEvent != nil else {
            b.close()
            return nil
        }
        // Connect completion (or failure) shows as writability; reported from
        // the loop even when a unix socket connected at once.
        b.armWrite()
        return b
    }

    /// Writes what the caller queued in `output`, as far as the socket takes it.
    func send() {
        guard connected, !closed, !pendingError else { return }
        flush()
    }

    func pauseRead() {
        guard !readPaused else { return }
        readPaused = true
        if connected, let readEvent { event_del(readEvent) }
    }

    func resumeRead() {
        guard readPaused else { return }
        readPaused = false
        if connected, !closed, let readEvent { event_add(readEvent, nil) }
    }

    /// The client left a tunnel: what it sent is written, then the
    /// connection closes (within `timeout` seconds). It keeps itself alive
    /// meanwhile, since nobody else holds it.
    func closeAfterFlush(timeout: Double) {
        exchange = nil
        guard !closed, connected, output.evLength > 0, !pendingError else { return close() }
        closingAfterFlush = Unmanaged.passRetained(self)
        pauseRead()
        if let writeEvent {
            var tv = timeval(seconds: timeout)
            writeArmed = true
            event_add(writeEvent, &tv)
        }
    }

    /// EV_READ and/or EV_WRITE fired.
    func ready(_ what: Int16) {
        if closingAfterFlush != nil {
            if what & Int16(EV_TIMEOUT) == 0, what & Int16(EV_WRITE) != 0, !pendingError {
                flush()
                if output.evLength > 0, !pendingError { return }
            }
            return close()
        }
        if what & Int16(EV_WRITE) != 0 {
            if pendingError { return fail(eof: false) }
            if !connected {
                var error: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
                guard error == 0 else { return fail(eof: false) }
                connected = true
                if !readPaused, let readEvent { event_add(readEvent, nil) }
                flush()
                if closed || pendingError { return }
                exchange?.backendEvent(self, .connected)
                // A request body queued while connecting may have been
                // written whole: the client side paused for it goes on.
                if !closed, output.evLength <= ProxyBuffers.writeLowWater { exchange?.backendEvent(self, .writable) }
                return
            }
            flush()
            if closed { return }
            if pendingError { return fail(eof: false) }
            // Like a bufferevent's write callback: room again below the low watermark.
            if output.evLength <= ProxyBuffers.writeLowWater { exchange?.backendEvent(self, .writable) }
            if closed { return }
        }
        if what & Int16(EV_READ) != 0, connected, !readPaused {
            readAvailable()
        }
    }

    /// Reads until the socket is drained, `singleTransfer` bytes were read or
    /// `readHighWater` bytes wait unconsumed; then tells the owner.
    private func readAvailable() {
        var total = 0
        var end: (eof: Bool, error: Bool) = (false, false)
        while total < ProxyBuffers.singleTransfer, input.evLength < ProxyBuffers.readHighWater {
            var vec = iovec()
            guard evbuffer_reserve_space(input, ProxyBuffers.readChunk, &vec, 1) == 1 else {
                end.error = true
                break
            }
            let want = min(vec.iov_len, ProxyBuffers.readChunk)
            let n = Glibc.read(fd, vec.iov_base, want)
            if n > 0 {
                vec.iov_len = n
                evbuffer_commit_space(input, &vec, 1)
                total += n
                // A short read emptied the socket: skip the read that would say EAGAIN.
                if n < want { break }
                continue
            }
            if n == 0 { end.eof = true } else if errno == EINTR { continue } else if errno != EAGAIN { end.error = true }
            break
        }
        if total > 0 {
            if let exchange { exchange.backendEvent(self, .readable) } else { return idleActivity() }
            if closed { return }
        }
        if end.eof || end.error {
            fail(eof: end.eof)
        } else if input.evLength >= ProxyBuffers.readHighWater, let readEvent {
            // Nobody consumed a full buffer: stop reading until someone resumes
            // (level-triggered epoll would otherwise wake us for nothing).
            readPaused = true
            event_del(readEvent)
        }
    }

    private func flush() {
        while output.evLength > 0 {
            let n = evbuffer_write_atmost(output, fd, ProxyBuffers.singleTransfer)
            if n > 0 { continue }
            if n < 0, errno == EINTR { continue }
            if n < 0, errno != EAGAIN {
                pendingError = true
                armWrite()
                // The loop reports it (see `pendingError`); it needs a wake-up
                // even if the socket never becomes writable again.
                if let writeEvent { event_active(writeEvent, Int32(EV_WRITE), 1) }
                return
            }
            break
        }
        if closingAfterFlush != nil { return }   // its timed write event stays
        if output.evLength > 0 { armWrite() } else { disarmWrite() }
    }

    private func armWrite() {
        guard !writeArmed, let writeEvent else { return }
        writeArmed = true
        event_add(writeEvent, nil)
    }

    private func disarmWrite() {
        guard writeArmed, let writeEvent else { return }
        writeArmed = false
        event_del(writeEvent)
    }

    private func fail(eof: Bool) {
        if let exchange { exchange.backendEvent(self, .failed(eof: eof)) } else { idleActivity() }
    }

    /// An idle pooled connection must stay silent: data or EOF means the
    /// backend closed or misbehaved, so it can never be reused.
    private func idleActivity() {
        pool?.remove(self)
        close()
    }

    func parked(in pool: BackendPool, now: Double) {
        self.pool = pool
        exchange = nil
        idleSince = now
    }

    func close() {
        guard !closed else { return }
        closed = true
        exchange = nil
        if let readEvent { event_free(readEvent) }
        if let writeEvent { event_free(writeEvent) }
        readEvent = nil
        writeEvent = nil
        Glibc.close(fd)
        let keeper = closingAfterFlush
        closingAfterFlush = nil
        keeper?.release()
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

    // The lists are changed in place (`idle[key]?...`): taking a copy out of
    // the dictionary and storing it back copied the whole list, a retain per
    // pooled connection, on every request.
    func take(_ key: String, now: Double) -> BackendConnection? {
        while let conn = idle[key]?.popLast() {
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
        guard idle[conn.poolKey, default: []].count < maxIdlePerBackend else {
            conn.close()
            return
        }
        conn.parked(in: self, now: now)
        idle[conn.poolKey, default: []].append(conn)
    }

    func remove(_ conn: BackendConnection) {
        guard let i = idle[conn.poolKey]?.firstIndex(where: { $0 === conn }) else { return }
        idle[conn.poolKey]?.remove(at: i)
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
    /// At most this much is read or written per wake-up, so one bulk transfer
    /// cannot starve the other connections of a worker.
    static let singleTransfer = 256 * 1024
    /// One backend read: 32 KiB chains (with libevent's chain header, one
    /// 32 KiB allocation each) become two full TLS records when forwarded.
    static let readChunk = 32 * 1024 - 128

}
