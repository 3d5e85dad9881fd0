import BerthModel
import Foundation
import Testing

@Suite("the cluster's model: durations, shell words, service specs")
struct ClusterModelTests {
    @Test("durations as docker spells them; anything else is a clear error")
    func durations() throws {
        for (text, seconds) in [("5s", 5.0), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("1.5s", 1.5), ("0", 0), ("250us", 0.00025)] {
            #expect(try DurationText.seconds(parsing: text, for: "--update-delay") == seconds, "\(text)")
        }
        for bad in ["", "5", "5x", "s", "-1s", "1m30"] {
            #expect(throws: BerthError.self, "\(bad)") { try DurationText.seconds(parsing: bad, for: "--update-delay") }
        }
        do {
            _ = try DurationText.seconds(parsing: "5x", for: "--update-monitor")
        } catch let error as BerthError {
            #expect(error.message == "--update-monitor \"5x\": expected a duration like 10s, 1m30s or 500ms")
        }
        #expect(DurationText.format(90) == "1m30s" && DurationText.format(0.25) == "250ms" && DurationText.format(5) == "5s" && DurationText.format(0) == "0s")
    }

    @Test("times as docker's --since and --until take them: RFC 3339, dates, Unix seconds, durations before now")
    func times() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        #expect(try TimeText.date(parsing: "2026-01-02T03:04:05Z", for: "--since", now: now) == RFC3339.parse("2026-01-02T03:04:05Z"))
        #expect(try TimeText.date(parsing: "2026-01-02", for: "--since", now: now) == RFC3339.parse("2026-01-02T00:00:00Z"))
        #expect(try TimeText.date(parsing: "2026-01-02T03:04:05", for: "--since", now: now) == RFC3339.parse("2026-01-02T03:04:05Z"))
        #expect(try TimeText.date(parsing: "1767322800.5", for: "--since", now: now) == Date(timeIntervalSince1970: 1_767_322_800.5))
        #expect(try TimeText.date(parsing: "1h30m", for: "--since", now: now) == now.addingTimeInterval(-5400))
        for bad in ["yesterday", "", "-5m", "2026-13-45"] {
            #expect(throws: BerthError.self, "\(bad)") { try TimeText.date(parsing: bad, for: "--until", now: now) }
        }
    }

    @Test("--args is split as a shell splits words")
    func shellWords() throws {
        #expect(try ShellWords.split("sh -c 'sleep 2; exit 1'") == ["sh", "-c", "sleep 2; exit 1"])
        #expect(try ShellWords.split(#"echo "a \"b\" c" d\ e"#) == ["echo", #"a "b" c"#, "d e"])
        #expect(try ShellWords.split("  spaced   out  ") == ["spaced", "out"])
        #expect(try ShellWords.split("''") == [""])
        #expect(try ShellWords.split(#""\n is kept""#) == [#"\n is kept"#])
        #expect(throws: BerthError.self) { try ShellWords.split("sh -c 'open") }
        #expect(throws: BerthError.self) { try ShellWords.split(#"echo "open"#) }
        #expect(throws: BerthError.self) { try ShellWords.split("trailing \\") }
    }

    @Test("a service spec stored before modes and update policies reads with their defaults")
    func legacySpec() throws {
        let json = #"{"name":"web","replicas":3,"container":{"image":"busybox","command":[],"env":[],"labels":{},"resources":{},"mounts":[],"ports":[],"publishAll":false,"network":"bridge","networkAliases":[],"restartPolicy":"always","readOnlyRootfs":false,"initProcess":false,"capAdd":[],"capDrop":[],"securityOpts":[],"tty":false,"openStdin":false,"autoRemove":false,"ulimits":[]},"constraints":[],"placementPreferences":[],"updateParallelism":2}"#
        let spec = try BerthJSON.decoder().decode(ServiceSpec.self, from: Data(json.utf8))
        #expect(spec.mode == .replicated && spec.update == UpdatePolicy(parallelism: 2) && spec.maxReplicasPerNode == 0 && spec.stopAfterDisconnect == nil)
        let again = try BerthJSON.decoder().decode(ServiceSpec.self, from: BerthJSON.encoder().encode(spec))
        #expect(again == spec)
    }

    @Test("a spec a service cannot have is refused, saying why")
    func validation() {
        let container = ContainerSpec(image: "busybox")
        let cases: [(ServiceSpec, String)] = [
            (ServiceSpec(name: "web", maxConcurrent: 2, container: container), "--max-concurrent: only for --mode replicated-job"),
            (ServiceSpec(name: "web", mode: .global, container: container, maxReplicasPerNode: 1), "a global service has one replica per node"),
            (ServiceSpec(name: "web", container: container, update: UpdatePolicy(maxFailureRatio: 1.5)), "from 0 to 1"),
            (ServiceSpec(name: "web", container: container, update: UpdatePolicy(parallelism: 0)), "--update-parallelism 0: at least 1"),
            (ServiceSpec(name: "web", container: container, stopAfterDisconnect: 0), "--stop-after-disconnect"),
            (ServiceSpec(name: "web", container: container, maxReplicasPerNode: -1), "--replicas-max-per-node"),
        ]
        for (spec, message) in cases {
            do {
                try spec.validate()
                Issue.record("\(spec) was taken")
            } catch let error as BerthError {
                #expect(error.code == .invalidArgument && error.message.contains(message), "\(error.message)")
            } catch {
                Issue.record("\(error)")
            }
        }
        #expect(throws: BerthError.self) { try ServiceMode(parsing: "daemon") }
        #expect(throws: BerthError.self) { try UpdatePolicy.FailureAction(parsing: "retry") }
    }
}

@Suite("ps output narrowed to a container's processes (docker's top)")
struct ProcessTableTests {
    @Test("the header's titles; the container's rows and their thread lines; the command with its spaces; no PID column is refused")
    func narrowed() throws {
        let output = """
            UID          PID    PPID  C STIME TTY          TIME CMD
            root           1       0  0 10:00 ?        00:00:01 /sbin/init splash
            root        4242    4200  0 10:01 ?        00:00:00 sleep 100
            root           -       -  0 10:01 -        00:00:00 -
            root        4300    4242  0 10:02 ?        00:00:00 sh -c echo  two  spaces

            """
        let table = try ProcessTable(psOutput: output, pids: [4242, 4300])
        #expect(table.titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"])
        #expect(table.processes.map { $0[1] } == ["4242", "-", "4300"])
        #expect(table.processes[2].last == "sh -c echo two spaces")
        #expect(throws: BerthError.self) { try ProcessTable(psOutput: "COMMAND\nsleep\n", pids: [1]) }
        #expect(throws: BerthError.self) { try ProcessTable(psOutput: "PID CMD\nx sleep\n", pids: [1]) }
    }
}

@Suite("--add-host entries")
struct ExtraHostTests {
    @Test("NAME:ADDRESS and NAME=ADDRESS, IPv4, IPv6 and host-gateway; anything else in docker's words")
    func parsing() throws {
        #expect(try ExtraHost(parsing: "db:10.1.2.3").description == "db:10.1.2.3")
        #expect(try ExtraHost(parsing: "db=10.1.2.3").description == "db:10.1.2.3")
        #expect(try ExtraHost(parsing: "v6:::1").address == "::1")
        #expect(try ExtraHost(parsing: "v6:fe80::1:2").address == "fe80::1:2")
        #expect(try ExtraHost(parsing: "host.docker.internal:host-gateway").address == ExtraHost.hostGateway)
        for bad in ["db", ":10.1.2.3", "db:", "db:10.1.2", "db:nohost", "db:1::2::3", "a b:10.0.0.1"] {
            #expect(throws: BerthError.self, "\(bad)") { try ExtraHost(parsing: bad) }
        }
        do {
            _ = try ExtraHost(parsing: "db:nohost")
        } catch let error as BerthError {
            #expect(error.message == "invalid argument \"db:nohost\" for \"--add-host\" flag: invalid IP address in add-host: \"nohost\"")
        }
    }
}
