public import BerthModel

/// The little of the DNS wire format (RFC 1035) the embedded resolver
/// needs: reading one question, and answering it with A or PTR records.
public struct DNSQuery: Sendable, Hashable {
    public var id: UInt16
    /// Opcode and RD, as the asker set them.
    public var flags: UInt16
    /// Lower-cased, without the trailing dot.
    public var name: String
    public var type: UInt16
    public var questionClass: UInt16
    /// The question section as it came, echoed in the answer.
    var question: ArraySlice<UInt8>

    public static let typeA: UInt16 = 1
    public static let typePTR: UInt16 = 12
    public static let typeAAAA: UInt16 = 28

    /// Reads a standard query with exactly one question; nil for anything else.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count >= 12, bytes.count <= 512 else { return nil }
        func u16(_ i: Int) -> UInt16 { UInt16(bytes[i]) << 8 | UInt16(bytes[i + 1]) }
        let flags = u16(2)
        // QR must be 0 (a query) and the opcode 0 (QUERY).
        guard flags & 0x8000 == 0, (flags >> 11) & 0xf == 0, u16(4) == 1 else { return nil }
        var i = 12
        var labels: [String] = []
        while true {
            guard i < bytes.count else { return nil }
            let length = Int(bytes[i])
            i += 1
            if length == 0 { break }
            // No compression in a question, and labels of 63 bytes at most.
            guard length <= 63, i + length <= bytes.count else { return nil }
            labels.append(String(decoding: bytes[i..<i + length], as: UTF8.self).lowercased())
            i += length
        }
        guard i + 4 <= bytes.count, labels.joined(separator: ".").utf8.count <= 253 else { return nil }
        id = u16(0)
        self.flags = flags
        name = labels.joined(separator: ".")
        type = u16(i)
        questionClass = u16(i + 2)
        question = bytes[12..<i + 4]
    }

    /// An answer: `addresses` as A records, or `pointer` as a PTR record;
    /// neither gives an empty NOERROR answer (the name exists, not the type).
    public func answer(addresses: [IPv4Address] = [], pointer: String? = nil, ttl: UInt32 = 10) -> [UInt8] {
        var records: [[UInt8]] = []
        for address in addresses {
            records.append(Self.record(type: Self.typeA, ttl: ttl, data: [24, 16, 8, 0].map { UInt8(address.value >> $0 & 0xff) }))
        }
        if let pointer {
            var data: [UInt8] = []
            for label in pointer.split(separator: ".") {
                data.append(UInt8(label.utf8.count))
                data += label.utf8
            }
            data.append(0)
            records.append(Self.record(type: Self.typePTR, ttl: ttl, data: data))
        }
        return header(rcode: 0, answers: records.count) + question + records.joined()
    }

    /// An error answer: 2 SERVFAIL, 3 NXDOMAIN, 4 NOTIMP, 5 REFUSED.
    public func failure(rcode: UInt16) -> [UInt8] {
        header(rcode: rcode, answers: 0) + question
    }

    private func header(rcode: UInt16, answers: Int) -> [UInt8] {
        // QR, AA, RA set; the asker's opcode and RD kept.
        let flags: UInt16 = 0x8000 | 0x0400 | (self.flags & 0x7900) | 0x0080 | rcode
        return [id, flags, 1, UInt16(answers), 0, 0].flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }

    private static func record(type: UInt16, ttl: UInt32, data: [UInt8]) -> [UInt8] {
        // The name is a pointer to the question's (offset 12).
        var r: [UInt8] = [0xc0, 0x0c, UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
        r += [24, 16, 8, 0].map { UInt8(ttl >> $0 & 0xff) }
        r += [UInt8(data.count >> 8), UInt8(data.count & 0xff)] + data
        return r
    }

    /// The address a reverse-lookup name (`4.3.2.1.in-addr.arpa`) asks about.
    public var reverseAddress: IPv4Address? {
        guard name.hasSuffix(".in-addr.arpa") else { return nil }
        let octets = name.dropLast(".in-addr.arpa".count).split(separator: ".")
        guard octets.count == 4 else { return nil }
        return try? IPv4Address(parsing: octets.reversed().joined(separator: "."))
    }
}
