import CLibevent

/// The C edge of the proxy: every libevent callback, and the Unmanaged
/// context pointers they carry. Each trampoline keeps its object alive for the
/// duration of the call, since the handler may close (and release) it.
enum Callbacks {
    // MARK: client connections (context: the ClientConnection, retained while open)

    static let clientIO: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.socketReady(what) }
    }
    static let clientTimer: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let c = Unmanaged<ClientConnection>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(c) { c.timerFired() }
    }

    // MARK: the client socket BIO (data: the ClientTransport, which owns the SSL that owns the BIO)

    static let bioRead: @convention(c) (OpaquePointer?, UnsafeMutablePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32 = { bio, buffer, count, done in
        guard let bio, let buffer, let done else { return 0 }
        return SocketBIO.read(bio, buffer, count, &done.pointee)
    }
    static let bioWrite: @convention(c) (OpaquePointer?, UnsafePointer<CChar>?, Int, UnsafeMutablePointer<Int>?) -> Int32 = { bio, buffer, count, done in
        guard let bio, let buffer, let done else { return 0 }
        return SocketBIO.write(bio, buffer, count, &done.pointee)
    }
    static let bioControl: @convention(c) (OpaquePointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int = { _, command, _, _ in
        SocketBIO.control(command)
    }

    // MARK: backend connections (context: the BackendConnection, owned by its client or the pool)

    static let backendIO: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let b = Unmanaged<BackendConnection>.fromOpaque(ctx!).takeUnretainedValue()
        // What the client's side queued in this turn leaves now.
        let owner = b.exchange?.currentOwner
        withExtendedLifetime(b) { b.ready(what) }
        owner?.flushOutput()
    }

    // MARK: listeners (context: the Listener, owned by its worker)

    static let accept: @convention(c) (OpaquePointer?, Int32, UnsafeMutablePointer<sockaddr>?, Int32, UnsafeMutableRawPointer?) -> Void = { _, fd, address, _, ctx in
        let l = Unmanaged<Listener>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(l) { l.accepted(fd: fd, address: address) }
    }
    static let proxyHeader: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, what, ctx in
        let r = Unmanaged<ProxyHeaderReader>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(r) { r.fired(timedOut: what & Int16(EV_TIMEOUT) != 0) }
    }
    static let acceptError: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Void = { _, ctx in
        let l = Unmanaged<Listener>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(l) { l.acceptFailed() }
    }

    // MARK: worker events (context: the Worker)

    static let workerTick: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let w = Unmanaged<Worker>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(w) { w.tick() }
    }
    static let workerGraceOver: @convention(c) (Int32, Int16, UnsafeMutableRawPointer?) -> Void = { _, _, ctx in
        let w = Unmanaged<Worker>.fromOpaque(ctx!).takeUnretainedValue()
        withExtendedLifetime(w) { w.closeListeners() }
    }

}
