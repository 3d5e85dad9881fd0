import BerthCgroups
import BerthModel
import Foundation
import Synchronization
import Testing

/// The cgroup v2 device program, run here as the kernel runs it: the same
/// decisions as the v1 controller with the same rules.
@Suite("cgroup v2 device program")
struct DeviceFilterProgramTests {
    let defaults = DeviceFilterProgram(rules: DeviceRule.defaults)

    @Test("Docker's defaults: the standard nodes and terminals are used, any node may be made, no disk is read or written")
    func defaultRules() {
        for (major, minor) in [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, 0), (136, 7), (10, 200)] {
            for access: DeviceAccess in [.read, .write, [.read, .write], .mknod] {
                #expect(defaults.allows(.character, major: UInt32(major), minor: UInt32(minor), access), "c \(major):\(minor) \(access)")
            }
        }
        // The host's disks: made (mknod) but never opened.
        for (major, minor) in [(8, 0), (8, 1), (254, 0), (259, 0), (7, 0)] {
            #expect(defaults.allows(.block, major: UInt32(major), minor: UInt32(minor), .mknod))
            #expect(!defaults.allows(.block, major: UInt32(major), minor: UInt32(minor), .read), "b \(major):\(minor) r")
            #expect(!defaults.allows(.block, major: UInt32(major), minor: UInt32(minor), .write), "b \(major):\(minor) w")
            #expect(!defaults.allows(.block, major: UInt32(major), minor: UInt32(minor), [.read, .write]))
        }
        // Character devices that are not listed: /dev/mem, /dev/kmsg, a serial port, fuse.
        for (major, minor) in [(1, 1), (1, 11), (4, 64), (10, 229), (240, 0)] {
            #expect(!defaults.allows(.character, major: UInt32(major), minor: UInt32(minor), .read), "c \(major):\(minor) r")
            #expect(!defaults.allows(.character, major: UInt32(major), minor: UInt32(minor), .write), "c \(major):\(minor) w")
        }
        // A block device with the numbers of an allowed character device is still a block device.
        #expect(!defaults.allows(.block, major: 1, minor: 3, .read))
    }

    @Test("a --device rule adds exactly its device and its access")
    func addedRule() {
        let program = DeviceFilterProgram(rules: DeviceRule.defaults + [DeviceRule(.block, major: 8, minor: 16, access: .read)])
        #expect(program.allows(.block, major: 8, minor: 16, .read))
        #expect(!program.allows(.block, major: 8, minor: 16, .write))
        #expect(!program.allows(.block, major: 8, minor: 16, [.read, .write]))
        #expect(!program.allows(.block, major: 8, minor: 17, .read))
        #expect(!program.allows(.character, major: 8, minor: 16, .read))
        let all = DeviceFilterProgram(rules: [DeviceRule(.all, major: nil, minor: nil, access: .all)])
        #expect(all.allows(.block, major: 8, minor: 0, [.read, .write]))
        #expect(!DeviceFilterProgram(rules: []).allows(.character, major: 1, minor: 3, .read))
    }

    @Test("the program as the kernel takes it: 8 bytes an instruction, registers in one byte, little-endian fields")
    func encoding() {
        let bytes = defaults.bytes
        #expect(bytes.count == defaults.instructions.count * 8)
        // r2 = *(u32 *)(r1 + 0): code 0x61, dst 2 in the low nibble, src 1 in the high one.
        #expect(Array(bytes[0..<8]) == [0x61, 0x12, 0, 0, 0, 0, 0, 0])
        // w2 &= 0xffff.
        #expect(Array(bytes[8..<16]) == [0x54, 0x02, 0, 0, 0xFF, 0xFF, 0, 0])
        // It ends in r0 = 0; exit: deny what no rule allows.
        #expect(Array(bytes.suffix(16)) == [0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
        // Every jump lands inside the program.
        for (index, i) in defaults.instructions.enumerated() where i.code == 0x55 || i.code == 0x5d {
            #expect(index + 1 + Int(i.offset) < defaults.instructions.count)
        }
    }

    @Test("the v1 controller's spelling of the same rules is Docker's")
    func v1Spelling() {
        #expect(DeviceRule.defaults.map(\.description) == [
            "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
            "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm",
        ])
        #expect(DeviceRule(.block, major: 8, minor: 0, access: [.read, .mknod]).description == "b 8:0 rm")
    }
}

/// Records what a cgroup v2 driver asks of the device filter.
final class SpyDeviceFilter: DeviceFilter {
    let applied = Mutex<[(rules: [DeviceRule], path: String)]>([])
    func apply(_ rules: [DeviceRule], toCgroup path: String) throws {
        let exists = FileManager.default.fileExists(atPath: path)
        applied.withLock { $0.append((rules, exists ? path : "(missing) \(path)")) }
    }
}
