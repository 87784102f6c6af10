import COpenSSL
import CShims

/// The C edge of the TLS module: every callback OpenSSL calls, and the
/// Unmanaged context pointers they carry.
enum TLSCallbacks {
    /// ex_data slot holding "selected domain + 1" on each SSL.
    static let domainIndex: Int32 = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nil, nil, nil, nil)
    /// ex_data slot holding the alert the ClientHello callback refused with.
    static let refusalIndex: Int32 = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nil, nil, nil, nil)
    /// ex_data slot holding the listener's SNI fallback profile + 1 on each SSL.
    static let fallbackIndex: Int32 = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nil, nil, nil, nil)
    /// ex_data slot holding a validation handshake's challenge Credentials,
    /// retained; released with the SSL.
    static let validationIndex: Int32 = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, nil, nil, nil, releaseCredentials)
    /// ex_data slot holding the (unretained) TicketKeys on each SSL_CTX.
    static let ticketKeysIndex: Int32 = CRYPTO_get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, nil, nil, nil, nil)

    static func installClientHello(on ctx: OpaquePointer, server: TLSServer) {
        // Unretained: the TLSServer owns the context and outlives every SSL
        // made from it (each connection keeps its snapshot alive).
        SSL_CTX_set_client_hello_cb(ctx, clientHello, Unmanaged.passUnretained(server).toOpaque())
    }

    static func installCertificate(on ctx: OpaquePointer, server: TLSServer) {
        // Unretained, as for the ClientHello callback.
        SSL_CTX_set_cert_cb(ctx, certificate, Unmanaged.passUnretained(server).toOpaque())
    }

    static func installTicketKeys(on ctx: OpaquePointer, keys: TicketKeys) {
        // Unretained: the TLSServer owning the context keeps the keys alive.
        SSL_CTX_set_ex_data(ctx, ticketKeysIndex, Unmanaged.passUnretained(keys).toOpaque())
        _ = SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticketKey)
    }

    static func installALPN(on ctx: OpaquePointer, server: TLSServer) {
        // Unretained, as for the ClientHello callback.
        SSL_CTX_set_alpn_select_cb(ctx, selectALPN, Unmanaged.passUnretained(server).toOpaque())
    }

    private static let clientHello: @convention(c) (OpaquePointer?, UnsafeMutablePointer<Int32>?, UnsafeMutableRawPointer?) -> Int32 = { ssl, alert, arg in
        guard let ssl, let arg else { return 0 }
        let server = Unmanaged<TLSServer>.fromOpaque(arg).takeUnretainedValue()
        var data: UnsafePointer<UInt8>?
        var length = 0
        var serverName: UnsafeRawBufferPointer?
        if SSL_client_hello_get0_ext(ssl, UInt32(TLSEXT_TYPE_server_name), &data, &length) == 1, let data {
            serverName = ServerNameExtension.hostName(in: UnsafeRawBufferPointer(start: data, count: length))
        }
        var alpn: UnsafeRawBufferPointer?
        if SSL_client_hello_get0_ext(ssl, UInt32(TLSEXT_TYPE_application_layer_protocol_negotiation), &data, &length) == 1, let data {
            alpn = ALPN.protocolList(extensionBody: UnsafeRawBufferPointer(start: data, count: length))
        }
        switch server.select(ssl: ssl, serverName: serverName, alpn: alpn) {
        case .selected:
            return 1
        case .refuse(let code):
            alert?.pointee = code
            SSL_set_ex_data(ssl, refusalIndex, UnsafeMutableRawPointer(bitPattern: Int(code) + 1))
            return 0
        }
    }

    /// Retained until cleared or the SSL is freed (the slot's free callback).
    static func setValidation(_ ssl: OpaquePointer, _ challenge: Credentials) {
        clearValidation(ssl)
        SSL_set_ex_data(ssl, validationIndex, Unmanaged.passRetained(challenge).toOpaque())
    }

    /// SSL_set_ex_data does not call the free callback: release here.
    static func clearValidation(_ ssl: OpaquePointer) {
        guard let raw = SSL_get_ex_data(ssl, validationIndex) else { return }
        SSL_set_ex_data(ssl, validationIndex, nil)
        Unmanaged<Credentials>.fromOpaque(raw).release()
    }

    private static let releaseCredentials: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutablePointer<CRYPTO_EX_DATA>?, Int32, Int, UnsafeMutableRawPointer?) -> Void = { _, pointer, _, _, _, _ in
        guard let pointer else { return }
        Unmanaged<Credentials>.fromOpaque(pointer).release()
    }

    /// Full handshakes only (OpenSSL skips it when a session resumes). Returns
    /// 1 = go on, 0 = fail with internal_error.
    private static let certificate: @convention(c) (OpaquePointer?, UnsafeMutableRawPointer?) -> Int32 = { ssl, arg in
        guard let ssl, let arg else { return 0 }
        let server = Unmanaged<TLSServer>.fromOpaque(arg).takeUnretainedValue()
        switch server.installCertificate(ssl: ssl) {
        case .installed:
            return 1
        case .unavailable:
            // Going on without a certificate makes OpenSSL itself refuse with
            // handshake_failure (no signature algorithm, no cipher), the alert
            // such a domain always got; 0 would send internal_error.
            SSL_set_ex_data(ssl, refusalIndex, UnsafeMutableRawPointer(bitPattern: Int(SSL_AD_HANDSHAKE_FAILURE) + 1))
            return 1
        case .failed:
            SSL_set_ex_data(ssl, refusalIndex, UnsafeMutableRawPointer(bitPattern: Int(SSL_AD_INTERNAL_ERROR) + 1))
            return 0
        }
    }

    /// RFC 5077 §4 / RFC 8446 §4.6.1 stateless tickets under our own keys.
    /// Returns (encrypt) 1 = ticket made, 0 = none; (decrypt) 1 = ok, 2 = ok but
    /// renew under the current key, 0 = unknown key: full handshake.
    private static let ticketKey: @convention(c) (OpaquePointer?, UnsafeMutablePointer<UInt8>?, UnsafeMutablePointer<UInt8>?, OpaquePointer?, OpaquePointer?, Int32) -> Int32 = { ssl, name, iv, cipher, mac, enc in
        guard let ssl, let name, let iv, let cipher, let mac,
              let ctx = SSL_get_SSL_CTX(ssl), let raw = SSL_CTX_get_ex_data(ctx, ticketKeysIndex) else { return -1 }
        let keys = Unmanaged<TicketKeys>.fromOpaque(raw).takeUnretainedValue()
        let key: TicketKey
        var result: Int32 = 1
        if enc != 0 {
            guard let current = keys.encryptionKey() else { return 0 }
            key = current
            for i in 0 ..< 16 { name[i] = key.name[i] }
        } else {
            switch keys.decryptionKey(named: UnsafeRawBufferPointer(start: name, count: 16)) {
            case .current(let k):
                key = k
                // TLS 1.3: OpenSSL sends NewSessionTicket after a resumption only
                // when asked to renew; without it every other handshake is full
                // (a client's next connection has no fresh ticket).
                if SSL_version(ssl) == gh_tls1_3_version() { result = 2 }
            case .old(let k): key = k; result = 2
            case .unknown: return 0
            }
        }
        let ok = key.aesKey.withUnsafeBufferPointer { aes in
            key.hmacKey.withUnsafeBufferPointer { hmac in
                gh_ticket_crypto_init(cipher, mac, aes.baseAddress, hmac.baseAddress, iv, enc)
            }
        }
        return ok == 1 ? result : -1
    }

    /// RFC 7301: h2 where the domain and the negotiated TLS allow it, else
    /// http/1.1; no ALPN answer if the client offered neither.
    private static let selectALPN: @convention(c) (OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?, UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?) -> Int32 = { ssl, out, outLength, input, inputLength, arg in
        guard let ssl, let input, let out, let outLength, let arg else { return SSL_TLSEXT_ERR_NOACK }
        let server = Unmanaged<TLSServer>.fromOpaque(arg).takeUnretainedValue()
        let offered = UnsafeRawBufferPointer(start: input, count: Int(inputLength))
        if TLSServer.isACMEValidation(ssl) {
            // RFC 8737 §3: the list is exactly acme-tls/1 (checked again: the
            // answer points into it).
            guard ALPN.offersOnlyACMEValidation(offered) else { return SSL_TLSEXT_ERR_ALERT_FATAL }
            out.pointee = input + 1
            outLength.pointee = UInt8(ALPN.acmeTLS1.count)
            return SSL_TLSEXT_ERR_OK
        }
        guard let chosen = ALPN.select(from: offered, h2Allowed: server.allowsHTTP2(ssl: ssl)) else { return SSL_TLSEXT_ERR_NOACK }
        out.pointee = input + chosen.offset
        outLength.pointee = UInt8(chosen.length)
        return SSL_TLSEXT_ERR_OK
    }
}
