import CBerthSyscalls
import Glibc

/// Terminals: their size, raw mode.
public enum Terminal {
    /// A terminal's settings, to put back.
    public struct Settings: @unchecked Sendable {
        fileprivate var value: termios
    }

    /// The window size (TIOCGWINSZ); nil when `fd` is not a terminal or has no size.
    public static func size(of fd: Descriptor) -> (rows: UInt16, columns: UInt16)? {
        var rows: UInt16 = 0
        var columns: UInt16 = 0
        guard berth_get_window_size(fd.raw, &rows, &columns) == 0, rows > 0, columns > 0 else { return nil }
        return (rows, columns)
    }

    /// Sets the window size (TIOCSWINSZ); a descriptor that is no terminal is left alone.
    public static func setSize(of fd: Descriptor, rows: UInt16, columns: UInt16) {
        _ = berth_set_window_size(fd.raw, rows, columns)
    }

    /// Puts the terminal in raw mode (cfmakeraw); the settings before, or nil
    /// when `fd` is not a terminal.
    public static func makeRaw(_ fd: Descriptor) -> Settings? {
        var saved = termios()
        guard tcgetattr(fd.raw, &saved) == 0 else { return nil }
        var raw = saved
        cfmakeraw(&raw)
        guard tcsetattr(fd.raw, TCSANOW, &raw) == 0 else { return nil }
        return Settings(value: saved)
    }

    public static func restore(_ fd: Descriptor, _ settings: Settings) {
        var value = settings.value
        _ = tcsetattr(fd.raw, TCSANOW, &value)
    }
}

/// Pseudo-terminal pairs.
public enum PseudoTerminal {
    /// A master (O_RDWR, close-on-exec, not the caller's controlling
    /// terminal) and its opened slave. With `root` (a container's root
    /// directory, `/proc/PID/root`), from that root's /dev/ptmx, the
    /// container's own devpts, so that the process sees its terminal as
    /// /dev/pts/N; nil uses the host's.
    public static func open(root: String?, rows: UInt16, columns: UInt16) throws -> (master: Descriptor, slave: Descriptor) {
        var rootFD: Descriptor?
        if let root { rootFD = try Descriptor.open(root, [.pathOnly, .directory]) }
        defer { rootFD?.close() }
        var master: Int32 = -1
        var slave: Int32 = -1
        guard berth_open_pty(rootFD?.raw ?? -1, &master, &slave, rows, columns) == 0 else { throw SystemError.last("open /dev/ptmx", path: root) }
        return (Descriptor(master), Descriptor(slave))
    }
}

/// A process by its pidfd.
public enum ProcessDescriptor {
    /// pidfd_send_signal: never reaches another process that took the PID.
    public static func signal(_ pidfd: Descriptor, _ signal: Int32) throws {
        guard berth_pidfd_send_signal(pidfd.raw, signal) == 0 else { throw SystemError.last("pidfd_send_signal") }
    }
}

/// Signals the process takes.
public enum Signals {
    /// The process ignores `signal` from now on (SIG_IGN).
    public static func ignore(_ signal: Int32) { _ = Glibc.signal(signal, SIG_IGN) }
}
