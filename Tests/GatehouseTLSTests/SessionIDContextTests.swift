import Testing
import GatehouseConfig
@testable import GatehouseTLS

@Suite struct SessionIDContextTests {
    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    /// SHA-256("a.test" 0x00 "modern"), as computed per handshake before the value
    /// was made once per domain: sessions from older releases still resume.
    @Test func valueIsSHA256OfNameZeroProfile() throws {
        let maker = try SessionIDContext.Maker()
        #expect(Self.hex(try maker.make(name: "a.test", profile: .modern).bytes)
                == "047e1622b481eee5e305bf66b6836d2ae9b3e09709054aa5e52c66f84d2393e0")
        #expect(Self.hex(try maker.make(name: "a.test", profile: .legacy).bytes)
                == "5724a0b81d8203691b02cc7737eee609441d87bcf7cc2f9f46ce163d2f406080")
    }

    @Test func differsByNameAndProfileAndIsRepeatable() throws {
        let maker = try SessionIDContext.Maker()
        let a = try maker.make(name: "a.test", profile: .modern)
        #expect(a == (try SessionIDContext.Maker().make(name: "a.test", profile: .modern)))
        #expect(a == (try maker.make(name: "a.test", profile: .modern)))
        #expect(a != (try maker.make(name: "b.test", profile: .modern)))
        #expect(a != (try maker.make(name: "a.test", profile: .strict)))
        #expect(a.bytes.count == 32)
        #expect(MemoryLayout<SessionIDContext>.size == 32)
    }
}
