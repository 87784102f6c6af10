#if canImport(Glibc)
import Glibc
#endif
import CLibevent
import COpenSSL

/// What one turn of a transport produced; the client connection acts on it.
struct TransportReport: OptionSet {
    let rawValue: UInt8
    /// TLS handshake finished (the request may already be in `input`).
    static let handshakeDone = TransportReport(rawValue: 1 << 0)
    /// TLS handshake failed; `failureCodes` says why. The owner aborts.
    static let handshakeFailed = TransportReport(rawValue: 1 << 1)
    /// New bytes in `input`.
    static let readable = TransportReport(rawValue: 1 << 2)
    /// The peer closed its side (TCP FIN or close_notify) or the socket failed.
    static let peerGone = TransportReport(rawValue: 1 << 3)
    /// A flush wrote something and left at most the low watermark.
    static let writable = TransportReport(rawValue: 1 << 4)
    /// `shutdown` finished: flushed, close_notify sent, lingered, socket closed.
    static let closed = TransportReport(rawValue: 1 << 5)
}

/// Socket I/O of one client connection, TLS or plain, without bufferevents:
/// the fd, the SSL, one event and two evbuffers made on first use. It never
/// calls its owner:
/// every event returns a report (redis's `connection.h` idea: the HTTP logic
/// never touches OpenSSL or the socket).
///
/// - Reads go into `input` until the socket is drained; a read that returns
///   less than asked ends the loop, so a request costs no EAGAIN read. TLS uses
///   OpenSSL's read-ahead through our own socket BIO (it records short reads),
///   and records OpenSSL has buffered (`SSL_has_pending`) are processed before
///   waiting for the socket again.
/// - `flush` writes at once, in the iteration that queued the data: one
///   write(2) per TLS record of up to 16 KiB (a head and a small body are one
///   record); EV_WRITE is armed only while the socket is full.
/// - `shutdown` is the graceful end (flush, close_notify, FIN, then a bounded
///   lingering read so the kernel's RST cannot destroy the last response,
///   RFC 9112 §9.6); `abort` sends nothing and resets a plain connection, so a
///   client can tell a truncated close-delimited body from a complete one
///   (RFC 9112 §9.8).
final class ClientTransport {
    /// Made on first use: a connection that never got a byte holds neither.
    private var inputBuffer: OpaquePointer?
    private var outputBuffer: OpaquePointer?
    var input: OpaquePointer {
        if let inputBuffer { return inputBuffer }
        let b = evbuffer_new()!
        inputBuffer = b
        return b
    }
    var output: OpaquePointer {
        if let outputBuffer { return outputBuffer }
        let b = evbuffer_new()!
        outputBuffer = b
        return b
    }
    /// Bytes waiting in `input` / `output`, without making the buffer.
    var inputLength: Int { inputBuffer.map { evbuffer_get_length($0) } ?? 0 }
    var outputLength: Int { outputBuffer.map { evbuffer_get_length($0) } ?? 0 }
    let ssl: OpaquePointer?
    private let fd: Int32
    private let base: OpaquePointer
    /// One event for both directions (one fewer per idle connection); its
    /// flags follow what the transport wants (`updateInterest`).
    private var event: OpaquePointer?
    private var context: UnsafeMutableRawPointer
    /// The flags the event is added with now; 0: not added.
    private var interest: Int16 = 0
    /// The peer's FIN was seen while closing: only writes remain.
    private var readEnded = false

    enum Phase { case handshake, open, closing, lingering, closed }
    private(set) var phase: Phase
    /// Paused by the owner (backpressure).
    private var readPaused = false
    /// Stopped because `input` reached the high watermark.
    private var full = false
    private var writeArmed = false
    /// The last socket read returned less than asked (or EAGAIN): the socket
    /// was empty then; epoll reports anything that arrived since.
    private var lastReadShort = false
    /// A TLS read needs the socket writable first (a TLS 1.3 KeyUpdate answer).
    private var readWantsWrite = false
    private var lingerBytes = 0
    /// `shutdown` found unread input or was asked to linger.
    private var wantsLinger = false
    /// OpenSSL error codes of a failed handshake, oldest first.
    private(set) var failureCodes: [UInt] = []

    /// How long and how much a closing connection reads and discards after its
    /// FIN (nginx's lingering_timeout is 5 s): enough for a request body in
    /// flight to arrive, so the kernel does not answer it with an RST.
    static let lingerSeconds = 2.0
    static let lingerLimit = 1 << 20
    /// One TLS record's worth of plaintext (RFC 8446 §5.1).
    static let recordBytes = 16 * 1024

    /// Takes `fd` (and `ssl`): both are closed on failure too.
    init(base: OpaquePointer, fd: Int32, ssl: OpaquePointer?, context: UnsafeMutableRawPointer) throws(AcceptError) {
        self.fd = fd
        self.ssl = ssl
        self.base = base
        phase = ssl == nil ? .open : .handshake
        self.context = context
        event = event_new(base, fd, Int16(EV_READ | EV_PERSIST), Callbacks.clientIO, context)
        guard event != nil else {
            release()
            throw AcceptError.resources
        }
        if let ssl {
            guard let bio = BIO_new(SocketBIO.method) else {
                release()
                throw AcceptError.tls
            }
            BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
            BIO_set_init(bio, 1)
            SSL_set_bio(ssl, bio, bio)
            SSL_set_accept_state(ssl)
            // One read(2) takes every record the socket holds.
            SSL_set_read_ahead(ssl, 1)
            // A retried SSL_write may see the same bytes at a new address (evbuffer pullup).
            _ = SSL_ctrl(ssl, SSL_CTRL_MODE, Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER), nil)
        }
    }

    deinit {
        release()
        if let inputBuffer { evbuffer_free(inputBuffer) }
        if let outputBuffer { evbuffer_free(outputBuffer) }
    }

    enum AcceptError: Error { case tls, resources }

    /// Points the (not yet added) event at its owner's context.
    func attach(context: UnsafeMutableRawPointer) {
        self.context = context
    }

    /// Starts reading (the ClientHello, or the first request). No EV_WRITE:
    /// nothing is written before the client speaks.
    func start() {
        updateInterest()
    }

    /// Re-adds the event when the wanted directions changed (libevent's epoll
    /// changelist folds a delete and add within one loop turn into at most
    /// one epoll_ctl). `timeout`: for the lingering close.
    private func updateInterest(timeout: Double? = nil) {
        guard let event else { return }
        let wantRead: Bool
        switch phase {
        case .handshake, .open: wantRead = !readPaused && !full
        case .closing: wantRead = !readEnded
        case .lingering: wantRead = true
        case .closed: wantRead = false
        }
        let wanted = Int16(wantRead ? EV_READ : 0) | Int16(writeArmed ? EV_WRITE : 0)
        guard wanted != interest || timeout != nil else { return }
        if interest != 0 { event_del(event) }
        interest = wanted
        guard wanted != 0 else { return }
        event_assign(event, base, fd, wanted | Int16(EV_PERSIST), Callbacks.clientIO, context)
        if let timeout {
            var tv = timeval(seconds: timeout)
            event_add(event, &tv)
        } else {
            event_add(event, nil)
        }
    }

    /// Runs the event's callback in this loop turn (records OpenSSL holds
    /// would not wake epoll).
    private func wakeForRead() {
        if let event { event_active(event, Int32(EV_READ), 1) }
    }

    var isOpen: Bool { phase == .open }

    // MARK: - Events

    /// EV_READ, EV_WRITE or EV_TIMEOUT fired on the socket.
    func ready(_ what: Int16) -> TransportReport {
        switch phase {
        case .handshake:
            return handshake()
        case .open:
            var report: TransportReport = []
            if what & Int16(EV_WRITE) != 0 {
                if readWantsWrite {
                    readWantsWrite = false
                    report.formUnion(readAvailable())
                }
                report.formUnion(flush())
            }
            if what & Int16(EV_READ) != 0, !readPaused, !full, phase == .open {
                report.formUnion(readAvailable())
            }
            return report
        case .closing:
            // Still flushing the last response. What the peer sends is
            // dropped; its FIN may be a half-close, so the flush goes on.
            if what & Int16(EV_READ) != 0 {
                switch discard() {
                case .more: break
                case .ended:
                    readEnded = true
                    updateInterest()
                case .failed: return finishClose()
                }
            }
            return closeWhenFlushed()
        case .lingering:
            if what & Int16(EV_TIMEOUT) != 0 || discard() != .more { return finishClose() }
            return []
        case .closed:
            return []
        }
    }

    // MARK: - Handshake

    private func handshake() -> TransportReport {
        guard let ssl else { return [] }
        ERR_clear_error()
        let rc = SSL_do_handshake(ssl)
        if rc == 1 {
            phase = .open
            disarmWrite()
            // The client may have sent its request with its Finished: with
            // read-ahead it can already sit in OpenSSL's buffer, where epoll
            // would never report it. Otherwise no read now: a read reserves
            // an input chain, which an idle connection would keep.
            var report: TransportReport = [.handshakeDone]
            if !readPaused, !full, SSL_has_pending(ssl) == 1 { report.formUnion(readAvailable()) }
            return report
        }
        switch SSL_get_error(ssl, rc) {
        case SSL_ERROR_WANT_READ:
            disarmWrite()
            return []
        case SSL_ERROR_WANT_WRITE:
            armWrite()
            return []
        default:
            // The owner reads the SSL's refusal, then aborts.
            while case let code = ERR_get_error(), code != 0 { failureCodes.append(code) }
            phase = .closing
            disarmWrite()
            return [.handshakeFailed]
        }
    }

    // MARK: - Reading

    /// Reads until the socket is drained, a single transfer's worth arrived,
    /// or `readHighWater` bytes wait unconsumed.
    private func readAvailable() -> TransportReport {
        var total = 0
        var gone = false
        reading: while total < ProxyBuffers.singleTransfer, input.evLength < ProxyBuffers.readHighWater {
            var vec = iovec()
            guard evbuffer_reserve_space(input, ProxyBuffers.readChunk, &vec, 1) == 1 else {
                gone = true
                break
            }
            let want = min(vec.iov_len, ProxyBuffers.readChunk)
            var n = 0
            if let ssl {
                ERR_clear_error()
                guard SSL_read_ex(ssl, vec.iov_base, want, &n) == 1 else {
                    switch SSL_get_error(ssl, 0) {
                    case SSL_ERROR_WANT_READ: break
                    case SSL_ERROR_WANT_WRITE: readWantsWrite = true; armWrite()
                    default: gone = true   // close_notify, FIN, or a TLS error
                    }
                    break reading
                }
            } else {
                n = Glibc.read(fd, vec.iov_base, want)
                if n <= 0 {
                    if n < 0, errno == EINTR { continue }
                    if n == 0 || errno != EAGAIN { gone = true }
                    break
                }
                lastReadShort = n < want
            }
            vec.iov_len = n
            evbuffer_commit_space(input, &vec, 1)
            total += n
            // Records OpenSSL still holds come first; after them, a short
            // socket read means the socket is empty (no EAGAIN read needed).
            if let ssl, SSL_has_pending(ssl) == 1 { continue }
            if lastReadShort { break }
        }
        if !gone {
            if input.evLength >= ProxyBuffers.readHighWater {
                // Until the owner has consumed some (`inputConsumed`).
                full = true
                updateInterest()
            } else if let ssl, SSL_has_pending(ssl) == 1 {
                // A single transfer's worth read; records OpenSSL holds would
                // not wake epoll: next turn.
                wakeForRead()
            }
        }
        var report: TransportReport = total > 0 ? [.readable] : []
        if gone { report.insert(.peerGone) }
        return report
    }

    /// Stops reading until `resumeReading` (backpressure from the backend).
    func pauseReading() {
        guard !readPaused else { return }
        readPaused = true
        updateInterest()
    }

    func resumeReading() {
        guard readPaused else { return }
        readPaused = false
        rearmRead()
    }

    /// The owner took bytes out of `input`: reading goes on if it had stopped
    /// at the high watermark.
    func inputConsumed() {
        guard full, inputLength < ProxyBuffers.readHighWater else { return }
        full = false
        rearmRead()
    }

    private func rearmRead() {
        guard !readPaused, !full, phase == .open || phase == .handshake else { return }
        updateInterest()
        // Records OpenSSL already read from the socket would not wake epoll.
        if let ssl, SSL_has_pending(ssl) == 1 { wakeForRead() }
    }

    // MARK: - Writing

    /// Writes what `output` holds, as far as the socket takes it now.
    /// `.writable` when something was written and at most the low watermark
    /// is left: a producer paused for this client may go on.
    func flush() -> TransportReport {
        guard phase == .open || phase == .closing, outputLength > 0 else { return [] }
        let before = output.evLength
        let report = write()
        if report.isEmpty, phase == .open, output.evLength < before, output.evLength <= ProxyBuffers.writeLowWater {
            return [.writable]
        }
        return report
    }

    private func write() -> TransportReport {
        guard let output = outputBuffer else {
            disarmWrite()
            return []
        }
        while output.evLength > 0 {
            if let ssl {
                let n = min(output.evLength, Self.recordBytes)
                guard let bytes = evbuffer_pullup(output, n) else { return failWrite() }
                ERR_clear_error()
                var written = 0
                if SSL_write_ex(ssl, bytes, n, &written) == 1 {
                    evbuffer_drain(output, written)
                    continue
                }
                switch SSL_get_error(ssl, 0) {
                case SSL_ERROR_WANT_WRITE, SSL_ERROR_WANT_READ:
                    armWrite()
                    return []
                default:
                    return failWrite()
                }
            } else {
                let n = evbuffer_write_atmost(output, fd, ProxyBuffers.singleTransfer)
                if n > 0 { continue }
                if n < 0, errno == EINTR { continue }
                if n < 0, errno == EAGAIN {
                    armWrite()
                    return []
                }
                return failWrite()
            }
        }
        disarmWrite()
        return []
    }

    private func failWrite() -> TransportReport {
        abort()
        return [.peerGone]
    }

    private func armWrite() {
        guard !writeArmed else { return }
        writeArmed = true
        updateInterest()
    }

    private func disarmWrite() {
        guard writeArmed else { return }
        writeArmed = false
        updateInterest()
    }

    // MARK: - Ending

    /// The graceful end: the queued output is written, then (TLS) close_notify,
    /// then FIN; with `linger`, what the client still sends is read and
    /// discarded for a bounded time before the socket closes. Reports
    /// `.closed` now or from a later `ready`.
    func shutdown(linger: Bool) -> TransportReport {
        switch phase {
        case .handshake:
            abort()
            return [.closed]
        case .open:
            phase = .closing
            wantsLinger = linger || inputLength > 0
            if let inputBuffer { evbuffer_drain(inputBuffer, evbuffer_get_length(inputBuffer)) }
            // Keep reading: the peer's data is discarded, its FIN ends the wait.
            readPaused = false
            full = false
            updateInterest()
            return closeWhenFlushed()
        case .closing, .lingering, .closed:
            return []
        }
    }

    private func closeWhenFlushed() -> TransportReport {
        if phase == .closed { return [.closed] }
        _ = write()
        if phase == .closed { return [.closed] }
        guard outputLength == 0 else { return [] }
        if let ssl, SSL_is_init_finished(ssl) == 1 {
            ERR_clear_error()
            // Best effort: a full socket here means the client is not reading.
            _ = SSL_shutdown(ssl)
        }
        guard wantsLinger else { return finishClose() }
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        phase = .lingering
        writeArmed = false
        updateInterest(timeout: Self.lingerSeconds)
        return []
    }

    enum Discarded { case more, ended, failed }

    /// Reads and drops what the peer sends: `.ended` at its FIN, `.failed` on
    /// an error or past `lingerLimit`.
    private func discard() -> Discarded {
        withUnsafeTemporaryAllocation(byteCount: 16 * 1024, alignment: 16) { buf in
            while true {
                let n = Glibc.read(fd, buf.baseAddress, buf.count)
                if n > 0 {
                    lingerBytes += n
                    if lingerBytes > Self.lingerLimit { return .failed }
                    continue
                }
                if n == 0 { return .ended }
                if errno == EINTR { continue }
                return errno == EAGAIN ? .more : .failed
            }
        }
    }

    private func finishClose() -> TransportReport {
        release()
        return [.closed]
    }

    /// Ends the connection now: no close_notify, and a plain connection is
    /// reset, so a cut-off response never looks complete.
    func abort() {
        guard phase != .closed else { return }
        if ssl == nil {
            var hard = linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
        }
        release()
    }

    /// Frees everything once; the socket is closed.
    private func release() {
        guard phase != .closed else { return }
        phase = .closed
        if let event { event_free(event) }
        event = nil
        interest = 0
        writeArmed = false
        if let ssl { SSL_free(ssl) }
        Glibc.close(fd)
        if let inputBuffer { evbuffer_drain(inputBuffer, evbuffer_get_length(inputBuffer)) }
        if let outputBuffer { evbuffer_drain(outputBuffer, evbuffer_get_length(outputBuffer)) }
    }

    /// The socket BIO's read and write, called by OpenSSL from SSL_* calls above.
    fileprivate func socketRead(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int {
        while true {
            let n = Glibc.read(fd, buffer, count)
            if n >= 0 {
                lastReadShort = n < count
                return n
            }
            if errno == EINTR { continue }
            lastReadShort = true
            return -1
        }
    }

    fileprivate func socketWrite(_ buffer: UnsafeRawPointer, _ count: Int) -> Int {
        while true {
            let n = Glibc.write(fd, buffer, count)
            if n >= 0 || errno != EINTR { return n }
        }
    }
}

/// A socket BIO of our own: the same read(2) and write(2) as OpenSSL's, but
/// it tells the transport when a read came back short (the socket is empty),
/// which OpenSSL's own socket BIO cannot.
enum SocketBIO {
    /// Written once (Swift's lazy static initialization is thread-safe), then
    /// only read by OpenSSL, from any worker.
    nonisolated(unsafe) static let method: OpaquePointer = {
        let m = BIO_meth_new(BIO_get_new_index() | Int32(BIO_TYPE_SOURCE_SINK), "gatehouse-socket")!
        _ = BIO_meth_set_read_ex(m, Callbacks.bioRead)
        _ = BIO_meth_set_write_ex(m, Callbacks.bioWrite)
        _ = BIO_meth_set_ctrl(m, Callbacks.bioControl)
        return m
    }()

    static func read(_ bio: OpaquePointer, _ buffer: UnsafeMutableRawPointer, _ count: Int, _ done: inout Int) -> Int32 {
        transfer(bio, retry: BIO_FLAGS_READ, &done) { $0.socketRead(buffer, count) }
    }

    static func write(_ bio: OpaquePointer, _ buffer: UnsafeRawPointer, _ count: Int, _ done: inout Int) -> Int32 {
        transfer(bio, retry: BIO_FLAGS_WRITE, &done) { $0.socketWrite(buffer, count) }
    }

    /// BIO_read_ex/BIO_write_ex conventions: 1 with `done` set on progress;
    /// 0 otherwise, with the retry flag (`retry`) set on EAGAIN.
    private static func transfer(_ bio: OpaquePointer, retry: Int32, _ done: inout Int,
                                 _ io: (ClientTransport) -> Int) -> Int32 {
        BIO_clear_flags(bio, Int32(BIO_FLAGS_READ | BIO_FLAGS_WRITE | BIO_FLAGS_IO_SPECIAL | BIO_FLAGS_SHOULD_RETRY))
        guard let data = BIO_get_data(bio) else { return 0 }
        let n = io(Unmanaged<ClientTransport>.fromOpaque(data).takeUnretainedValue())
        if n > 0 {
            done = n
            return 1
        }
        if n < 0, errno == EAGAIN { BIO_set_flags(bio, retry | Int32(BIO_FLAGS_SHOULD_RETRY)) }
        return 0
    }

    /// Only FLUSH matters to the SSL layer (writes are unbuffered).
    static func control(_ command: Int32) -> Int {
        command == BIO_CTRL_FLUSH ? 1 : 0
    }
}
