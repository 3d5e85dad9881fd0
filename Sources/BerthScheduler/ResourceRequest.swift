import BerthModel

/// CPU in thousandths of a CPU and memory in bytes: what a replica
/// requests, and what a node offers and has given to requests.
public struct ResourceRequest: Sendable, Hashable, CustomStringConvertible {
    public var milliCPU: Int64
    public var memoryBytes: Int64

    public init(milliCPU: Int64, memoryBytes: Int64) {
        self.milliCPU = milliCPU
        self.memoryBytes = memoryBytes
    }

    public static let zero = ResourceRequest(milliCPU: 0, memoryBytes: 0)

    public var description: String { "\(Double(milliCPU) / 1000) CPU, \(ByteSize(bytes: memoryBytes))" }
}
