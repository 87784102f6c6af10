import CLibevent
import GatehouseHTTP

/// How much of a message body is left, and how to move it between evbuffers.
/// Data bytes never pass through Swift: only chunk-size lines are parsed.
enum BodyState {
    case length(UInt64)
    /// `received`: data bytes so far, checked against `limit` (the domain's
    /// max_body_bytes, which a chunked body cannot announce up front).
    case chunked(ChunkedDecoder, received: UInt64 = 0, limit: UInt64? = nil)
    /// Until the backend closes (responses only).
    case untilClose
    case done

    enum PumpResult: Equatable {
        /// Moved what was available; more is expected.
        case progress
        case needMore
        case done
        case error(HTTPParseError)
        case closedEarly
    }

    init(request framing: BodyFraming, limits: HTTPLimits, maxBodyBytes: UInt64? = nil) {
        switch framing {
        case .none, .contentLength(0), .untilClose: self = .done
        case .contentLength(let n): self = .length(n)
        case .chunked: self = .chunked(ChunkedDecoder(limits: limits), limit: maxBodyBytes)
        }
    }

    var isDone: Bool { if case .done = self { true } else { false } }

    /// Chunk lines are bounded by the decoder; this is only how much to make
    /// contiguous at once (enough for a trailer section).
    private static let lineWindow = 16 * 1024

    /// Moves what `src` holds of this body into `dst`. With `reframe`, chunked
    /// bodies are written as chunked (sizes re-rendered, extensions and
    /// trailers dropped); without it, only the data.
    mutating func pump(from src: OpaquePointer, to dst: OpaquePointer, reframe: Bool) -> PumpResult {
        switch self {
        case .done:
            return .done
        case .length(let remaining):
            guard remaining > 0 else {
                self = .done
                return .done
            }
            let available = src.evLength
            guard available > 0 else { return .needMore }
            let n = Int(min(remaining, UInt64(available)))
            let moved = Evbuffer.move(from: src, to: dst, count: n)
            let left = remaining - UInt64(max(moved, 0))
            if left == 0 {
                self = .done
                return .done
            }
            self = .length(left)
            return .progress
        case .untilClose:
            let available = src.evLength
            guard available > 0 else { return .needMore }
            _ = Evbuffer.move(from: src, to: dst, count: available)
            return .progress
        case .chunked(var decoder, var received, let limit):
            defer { if case .chunked = self { self = .chunked(decoder, received: received, limit: limit) } }
            var moved = false
            var sink = EvbufferSink(buffer: dst)
            while true {
                let available = src.evLength
                if case .data(let remaining) = decoder.state {
                    guard available > 0 else { return moved ? .progress : .needMore }
                    let n = Int(min(remaining, UInt64(available)))
                    received += UInt64(n)
                    if let limit, received > limit {
                        self = .done
                        return .error(.contentTooLarge)
                    }
                    _ = Evbuffer.move(from: src, to: dst, count: n)
                    decoder.didConsumeData(n)
                    moved = true
                    continue
                }
                guard available > 0 else { return moved ? .progress : .needMore }
                let bytes = Evbuffer.front(src, max: Self.lineWindow)
                switch decoder.advance(bytes) {
                case .needMore:
                    if bytes.count >= Self.lineWindow {
                        self = .done
                        return .error(.headerFieldsTooLarge)
                    }
                    return moved ? .progress : .needMore
                case .chunk(let size, let consumed):
                    evbuffer_drain(src, consumed)
                    if reframe && size > 0 { writeChunkHeader(size: size, into: &sink) }
                    moved = true
                case .dataEnd(let consumed):
                    evbuffer_drain(src, consumed)
                    if reframe { writeChunkDataEnd(into: &sink) }
                case .end(let consumed):
                    evbuffer_drain(src, consumed)
                    if reframe { writeLastChunk(into: &sink) }
                    self = .done
                    return .done
                case .error(let error):
                    self = .done
                    return .error(error)
                }
            }
        }
    }
}

