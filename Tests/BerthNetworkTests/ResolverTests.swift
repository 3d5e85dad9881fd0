import BerthModel
import Foundation
import Glibc
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import BerthNetwork

/// A question as a resolver library sends it.
func question(_ name: String, type: UInt16, id: UInt16 = 0x1234) -> [UInt8] {
    var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xff), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
    for label in name.split(separator: ".") {
        bytes.append(UInt8(label.utf8.count))
        bytes += label.utf8
    }
    bytes += [0, UInt8(type >> 8), UInt8(type & 0xff), 0, 1]
    return bytes
}

/// The A records of an answer (and its rcode), read the plain way.
func addresses(in answer: [UInt8]) -> (rcode: UInt8, addresses: [String]) {
    let rcode = answer[3] & 0x0f
    let count = Int(answer[6]) << 8 | Int(answer[7])
    var i = 12
    while answer[i] != 0 { i += Int(answer[i]) + 1 }
    i += 5
    var found: [String] = []
    for _ in 0..<count {
        i += 2  // the name pointer
        let type = Int(answer[i]) << 8 | Int(answer[i + 1])
        let length = Int(answer[i + 8]) << 8 | Int(answer[i + 9])
        if type == 1 { found.append(answer[i + 10..<i + 14].map(String.init).joined(separator: ".")) }
        i += 10 + length
    }
    return (rcode, found)
}

@Suite("the embedded resolver's wire format and names")
struct ResolverTests {
    let a = try! IPv4Address(parsing: "10.89.3.2")
    let b = try! IPv4Address(parsing: "10.89.3.3")
    let c = try! IPv4Address(parsing: "10.89.4.2")

    func table() -> NameTable {
        let table = NameTable()
        table.register(container: "c1", [.init(networkID: "front", networkName: "front", address: a, names: ["web", "WWW"])])
        table.register(container: "c2", [.init(networkID: "front", networkName: "front", address: b, names: ["client"])])
        table.register(container: "c3", [.init(networkID: "back", networkName: "back", address: c, names: ["db"])])
        return table
    }

    @Test("a question is read; malformed ones, answers and other opcodes are not")
    func parse() throws {
        let q = try #require(DNSQuery(question("Web.Front", type: DNSQuery.typeA)))
        #expect(q.name == "web.front" && q.type == 1 && q.id == 0x1234 && q.questionClass == 1)
        #expect(DNSQuery([UInt8](repeating: 0, count: 11)) == nil, "shorter than a header")
        var answer = question("web", type: 1)
        answer[2] |= 0x80
        #expect(DNSQuery(answer) == nil, "an answer is not a question")
        var update = question("web", type: 1)
        update[2] |= 0x28
        #expect(DNSQuery(update) == nil, "opcode UPDATE")
        var truncated = question("web", type: 1)
        truncated.removeLast(3)
        #expect(DNSQuery(truncated) == nil)
        var long = question("web", type: 1)
        long[12] = 64
        #expect(DNSQuery(long) == nil, "a label over 63 bytes")
        #expect(try #require(DNSQuery(question("2.3.89.10.in-addr.arpa", type: 12))).reverseAddress == a)
    }

    @Test("answers: A records under a name pointer, an empty NOERROR for other types, PTR names, SERVFAIL")
    func answers() throws {
        let q = try #require(DNSQuery(question("web", type: 1, id: 77)))
        let answer = q.answer(addresses: [a, b])
        #expect(answer[0] == 0 && answer[1] == 77, "the question's ID")
        #expect(answer[2] & 0x80 != 0 && answer[2] & 0x01 != 0 && answer[3] & 0x80 != 0, "QR, RD kept, RA")
        #expect(addresses(in: answer) == (0, ["10.89.3.2", "10.89.3.3"]))
        #expect(addresses(in: q.answer()) == (0, []))
        #expect(addresses(in: q.failure(rcode: 2)).rcode == 2)
        let ptr = try #require(DNSQuery(question("2.3.89.10.in-addr.arpa", type: 12))).answer(pointer: "web")
        #expect(Array(ptr.suffix(5)) == [3] + Array("web".utf8) + [0])
    }

    @Test("names: by name, alias and name.network, case-insensitive, only on the asker's networks")
    func lookup() {
        let table = table()
        #expect(table.lookup("web", asker: b, on: "front") == [a])
        #expect(table.lookup("www", asker: b, on: "front") == [a])
        #expect(table.lookup("web.front", asker: b, on: "front") == [a])
        #expect(table.lookup("db", asker: b, on: "front").isEmpty, "another network's container")
        #expect(table.lookup("db", asker: c, on: "back") == [c])
        // Connected to both: names of both.
        table.register(container: "c2", [
            .init(networkID: "front", networkName: "front", address: b, names: ["client"]),
            .init(networkID: "back", networkName: "back", address: try! IPv4Address(parsing: "10.89.4.3"), names: ["client"]),
        ])
        #expect(table.lookup("db", asker: b, on: "front") == [c])
        #expect(table.name(of: a, asker: b, on: "front") == "web")
        table.unregister(container: "c1")
        #expect(table.lookup("web", asker: b, on: "front").isEmpty)
    }

    @Test("served over UDP: containers' names answered, AAAA empty, unknown names SERVFAIL without an upstream")
    func served() async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = DNSServer(table: table(), group: MultiThreadedEventLoopGroup.singleton, logger: logger) { [] }
        // A UDP port free now: the kernel's pick for a socket closed at once.
        let probe = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var bound = sockaddr_in()
        bound.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(probe, $0, length) == 0 ? getsockname(probe, $0, &length) : -1 }
        }
        close(probe)
        let port = Int(UInt16(bigEndian: bound.sin_port))
        try await server.serve(networkID: "front", address: IPv4Address(0x7f00_0001), port: port)
        defer { server.stopAll() }
        func ask(_ bytes: [UInt8]) -> [UInt8] {
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            defer { close(fd) }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            _ = withUnsafePointer(to: &address) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            var buffer = [UInt8](repeating: 0, count: 512)
            let n = recv(fd, &buffer, buffer.count, 0)
            return n > 0 ? Array(buffer[..<n]) : []
        }
        #expect(addresses(in: ask(question("web", type: 1))) == (0, ["10.89.3.2"]))
        #expect(addresses(in: ask(question("web", type: 28))) == (0, []))
        #expect(addresses(in: ask(question("example.test", type: 1))).rcode == 2)
    }
}

@Suite("addresses for containers")
struct AddressAllocatorTests {
    let network = Network(
        id: "n", name: "front", subnet: try! IPv4Subnet(parsing: "10.89.3.0/29"), gateway: try! IPv4Address(parsing: "10.89.3.1"),
        bridge: "br", internal: false, createdAt: .now)

    @Test("the lowest free host address, never the gateway; a full subnet is an error")
    func allocate() throws {
        var taken: Set<IPv4Address> = []
        var given: [String] = []
        for _ in 0..<5 {
            let address = try AddressAllocator.allocate(on: network, taken: taken)
            taken.insert(address)
            given.append(address.description)
        }
        #expect(given == ["10.89.3.2", "10.89.3.3", "10.89.3.4", "10.89.3.5", "10.89.3.6"])
        #expect(throws: BerthError.self) { try AddressAllocator.allocate(on: network, taken: taken) }
        taken.remove(try IPv4Address(parsing: "10.89.3.4"))
        #expect(try AddressAllocator.allocate(on: network, taken: taken).description == "10.89.3.4", "a released address is given again")
    }

    @Test("a requested address: in the subnet, not the gateway, network or broadcast address, not taken")
    func requested() throws {
        let taken: Set<IPv4Address> = [try IPv4Address(parsing: "10.89.3.2")]
        #expect(try AddressAllocator.allocate(on: network, taken: taken, requested: try IPv4Address(parsing: "10.89.3.6")).description == "10.89.3.6")
        for bad in ["10.89.3.2", "10.89.3.1", "10.89.3.0", "10.89.3.7", "10.89.4.2"] {
            #expect(throws: BerthError.self, "\(bad)") {
                try AddressAllocator.allocate(on: network, taken: taken, requested: try IPv4Address(parsing: bad))
            }
        }
    }
}
