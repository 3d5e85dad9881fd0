public import BerthModel

/// cgroup v2 has no device controller of its own: access to device nodes
/// is decided by a BPF program (BPF_PROG_TYPE_CGROUP_DEVICE) attached to the
/// cgroup. This builds that program from the same allow rules the v1
/// controller takes, as runc and crun do: one block per rule, in order, the
/// first that matches allows; anything else is denied.
///
/// Pure: the instructions are built and can be run here (`allows`), so
/// the rules are tested without a kernel; `KernelDeviceFilter` loads them.
public struct DeviceFilterProgram: Sendable, Hashable {
    /// One eBPF instruction (struct bpf_insn).
    public struct Instruction: Sendable, Hashable {
        public var code: UInt8
        public var dst: UInt8
        public var src: UInt8
        public var offset: Int16
        public var immediate: Int32

        init(_ code: UInt8, dst: UInt8 = 0, src: UInt8 = 0, offset: Int16 = 0, immediate: Int32 = 0) {
            self.code = code
            self.dst = dst
            self.src = src
            self.offset = offset
            self.immediate = immediate
        }
    }

    // The opcodes the program uses.
    static let loadWord: UInt8 = 0x61  // BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
    static let and32: UInt8 = 0x54  // BPF_ALU | BPF_AND | BPF_K: dst &= imm (32-bit)
    static let shiftRight32: UInt8 = 0x74  // BPF_ALU | BPF_RSH | BPF_K
    static let move32: UInt8 = 0xbc  // BPF_ALU | BPF_MOV | BPF_X: dst = src (32-bit)
    static let moveImmediate: UInt8 = 0xb7  // BPF_ALU64 | BPF_MOV | BPF_K
    static let jumpNotEqualImmediate: UInt8 = 0x55  // BPF_JMP | BPF_JNE | BPF_K
    static let jumpNotEqualRegister: UInt8 = 0x5d  // BPF_JMP | BPF_JNE | BPF_X
    static let exit: UInt8 = 0x95  // BPF_JMP | BPF_EXIT

    /// BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR.
    static func typeCode(_ kind: DeviceRule.Kind) -> Int32 { kind == .block ? 1 : 2 }

    public let rules: [DeviceRule]
    public let instructions: [Instruction]

    /// - Parameter rules: allow rules, in order.
    public init(rules: [DeviceRule]) {
        self.rules = rules
        var program: [Instruction] = [
            // r2 = device type (the low half of access_type), r3 = access
            // (its high half), r4 = major, r5 = minor.
            Instruction(Self.loadWord, dst: 2, src: 1, offset: 0),
            Instruction(Self.and32, dst: 2, immediate: 0xFFFF),
            Instruction(Self.loadWord, dst: 3, src: 1, offset: 0),
            Instruction(Self.shiftRight32, dst: 3, immediate: 16),
            Instruction(Self.loadWord, dst: 4, src: 1, offset: 4),
            Instruction(Self.loadWord, dst: 5, src: 1, offset: 8),
        ]
        for rule in rules {
            // Each test jumps past the block (to the next rule) on a mismatch.
            var tests: [Instruction] = []
            if rule.kind != .all {
                tests.append(Instruction(Self.jumpNotEqualImmediate, dst: 2, immediate: Self.typeCode(rule.kind)))
            }
            if rule.access != .all {
                // Asked ⊆ allowed: (asked & allowed) == asked.
                tests.append(Instruction(Self.move32, dst: 1, src: 3))
                tests.append(Instruction(Self.and32, dst: 1, immediate: Int32(rule.access.rawValue)))
                tests.append(Instruction(Self.jumpNotEqualRegister, dst: 1, src: 3))
            }
            if let major = rule.major { tests.append(Instruction(Self.jumpNotEqualImmediate, dst: 4, immediate: Int32(bitPattern: major))) }
            if let minor = rule.minor { tests.append(Instruction(Self.jumpNotEqualImmediate, dst: 5, immediate: Int32(bitPattern: minor))) }
            let block = tests + [Instruction(Self.moveImmediate, dst: 0, immediate: 1), Instruction(Self.exit)]
            for (index, instruction) in block.enumerated() {
                var fixed = instruction
                if instruction.code == Self.jumpNotEqualImmediate || instruction.code == Self.jumpNotEqualRegister {
                    fixed.offset = Int16(block.count - index - 1)
                }
                program.append(fixed)
            }
        }
        program += [Instruction(Self.moveImmediate, dst: 0, immediate: 0), Instruction(Self.exit)]
        self.instructions = program
    }

    /// The program as the kernel takes it: 8 bytes per instruction, little-endian.
    public var bytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(instructions.count * 8)
        for i in instructions {
            out.append(i.code)
            out.append((i.src << 4) | (i.dst & 0x0F))
            withUnsafeBytes(of: i.offset.littleEndian) { out += $0 }
            withUnsafeBytes(of: i.immediate.littleEndian) { out += $0 }
        }
        return out
    }

    /// Runs the program as the kernel would on an access to a device: true
    /// when it allows it. Only the instructions this type emits are known.
    public func allows(_ kind: DeviceRule.Kind, major: UInt32, minor: UInt32, _ access: DeviceAccess) -> Bool {
        let context: [UInt32] = [UInt32(access.rawValue) << 16 | UInt32(Self.typeCode(kind)), major, minor]
        var registers = [UInt64](repeating: 0, count: 11)
        var pc = 0
        var steps = 0
        while pc < instructions.count, steps < 100_000 {
            steps += 1
            let i = instructions[pc]
            pc += 1
            let dst = Int(i.dst)
            let src = Int(i.src)
            let immediate = UInt64(UInt32(bitPattern: i.immediate))
            switch i.code {
            case Self.loadWord:
                // r1 holds the context; offsets are byte offsets into it.
                registers[dst] = UInt64(context[Int(i.offset) / 4])
            case Self.and32: registers[dst] = (registers[dst] & immediate) & 0xFFFF_FFFF
            case Self.shiftRight32: registers[dst] = (registers[dst] & 0xFFFF_FFFF) >> immediate
            case Self.move32: registers[dst] = registers[src] & 0xFFFF_FFFF
            case Self.moveImmediate: registers[dst] = UInt64(bitPattern: Int64(i.immediate))
            case Self.jumpNotEqualImmediate: if registers[dst] != UInt64(bitPattern: Int64(i.immediate)) { pc += Int(i.offset) }
            case Self.jumpNotEqualRegister: if registers[dst] != registers[src] { pc += Int(i.offset) }
            case Self.exit: return registers[0] != 0
            default: return false
            }
        }
        return false
    }
}
