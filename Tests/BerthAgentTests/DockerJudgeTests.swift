import BerthLinux
import BerthTesting
import Foundation
import Testing

/// The same commands through Debian's docker and through berth: exit
/// codes, `inspect -f` answers and `--format` output compared. Where
/// they differ, docker is right.
@Suite("berth beside docker (root)", .ownThreads, .enabled(if: Privileges.root), .timeLimit(.minutes(5)))
struct DockerJudgeTests {
    /// Runs `arguments` through both; their exit codes and standard output.
    struct Both {
        let docker: DockerEngine
        let berth: ContainerHost

        func run(_ arguments: [String]) async throws -> (docker: CommandResult, berth: CommandResult) {
            (try await docker.docker(arguments), try await berth.berth(arguments))
        }

        /// Expects the same exit code and the same output (or, for an ID,
        /// output of the same length).
        func same(_ arguments: [String], id: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) async throws {
            let (d, b) = try await run(arguments)
            #expect(b.status == d.status, "exit code of \(arguments): docker \(d.status) (\(d.stderr)), berth \(b.status) (\(b.stderr))", sourceLocation: sourceLocation)
            #expect(id ? b.stdout.count == d.stdout.count : b.stdout == d.stdout, "output of \(arguments): docker \(d.stdout.debugDescription), berth \(b.stdout.debugDescription)", sourceLocation: sourceLocation)
        }
    }

    @Test("what docker 23 and later take and Debian's docker 20.10 does not: -v ./relative, events --since and --until with times")
    func laterSpellings() async throws {
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rel-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("sub"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try "here\n".write(to: directory.appendingPathComponent("sub/file"), atomically: true, encoding: .utf8)
        var environment = ProcessInfo.processInfo.environment
        environment["BERTH_HOST"] = "unix://\(host.agent.socketPath)"
        let shell = try await runCommand(
            URL(fileURLWithPath: "/bin/sh"), ["-c", "cd \(directory.path) && exec \(try BuildProducts.executable("berth").path) run --rm --network none -v ./sub:/x busybox cat /x/file"],
            environment: environment)
        #expect(shell.status == 0 && shell.stdout == "here\n", "\(shell)")
        #expect(try await host.berth(["run", "--name", "marked", "--network", "none", "busybox", "true"]).status == 0)
        // A window in the past: its events, then the command ends.
        let past = try await host.berth(["events", "--since", "10m", "--until", "0s", "--filter", "container=marked", "--format", "{{.Action}}"])
        #expect(past.status == 0 && past.stdout.split(separator: "\n").starts(with: ["create", "start"]), "\(past)")
        #expect(past.stdout.contains("die"), "\(past.stdout)")
        let none = try await host.berth(["events", "--since", "2000-01-01", "--until", "2000-01-02", "--format", "{{.Action}}"])
        #expect(none.status == 0 && none.stdout.isEmpty, "\(none)")
        let bad = try await host.berth(["events", "--since", "yesterday"])
        #expect(bad.status == 1 && bad.stderr.contains("expected a time"), "\(bad)")

        // --add-host NAME:host-gateway: the gateway of the container's network; refused on none.
        #expect(try await host.berth(["network", "create", "--subnet", "10.213.57.0/24", "judgenet"]).status == 0)
        let gateway = try await host.berth(["run", "--rm", "--network", "judgenet", "--add-host", "host.docker.internal:host-gateway", "busybox", "grep", "host.docker.internal", "/etc/hosts"])
        #expect(gateway.status == 0 && gateway.stdout == "10.213.57.1\thost.docker.internal\n", "\(gateway)")
        let nowhere = try await host.berth(["run", "--rm", "--network", "none", "--add-host", "h:host-gateway", "busybox", "true"])
        #expect(nowhere.status == 125 && nowhere.stderr.contains("host-gateway is the gateway of the container's network"), "\(nowhere)")
        #expect(try await host.berth(["network", "rm", "judgenet"]).status == 0)

        // Completion: the scripts parse in their shells, and names come from the agent.
        let script = try await host.berth(["completion", "bash"])
        #expect(script.status == 0 && script.stdout.contains("-F _berth berth"), "\(script.stderr)")
        let file = directory.appendingPathComponent("berth.bash").path
        try script.stdout.write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await runCommand(URL(fileURLWithPath: "/bin/bash"), ["-n", file]).status == 0)
        let containers = try await host.berth(["---completion", "stop", "--", "positional@0", "2", "0", ""])
        #expect(containers.stdout.split(separator: "\n").contains("marked"), "\(containers)")
        let images = try await host.berth(["---completion", "run", "--", "positional@0", "2", "0", ""])
        #expect(images.stdout.split(separator: "\n").contains("busybox:latest"), "\(images)")
        #expect(try await host.berth(["completion", "zsh"]).stdout.contains("#compdef berth"))
        #expect(try await host.berth(["completion", "fish"]).stdout.contains("complete -c 'berth'"))
        #expect(try await host.berth(["completion", "tcsh"]).status == 1)
    }

    @Test("run, inspect -f, ps --format, images and volumes answer as docker's do")
    func sameAnswers() async throws {
        let docker = try await DockerEngine()
        defer { docker.cleanUp() }
        let host = try await ContainerHost()
        defer { host.cleanUp() }
        let both = Both(docker: docker, berth: host)
        // The same image on both: the test image with docker import's --change CMD.
        let plain = try await host.berth(["images", "-q", "--no-trunc"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let imported = try await host.berth(["image", "import", "--change", #"CMD ["sh"]"#, try TestImage.tar.get(), "busybox"])
        try #require(imported.status == 0, "\(imported.stderr)")
        #expect(try await host.berth(["rmi", plain]).status == 0)
        let bind = FileManager.default.temporaryDirectory.appendingPathComponent("judge-\(UUID().uuidString.prefix(6))").path
        try FileManager.default.createDirectory(atPath: bind, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: bind) }

        // Containers made the same way on both.
        let (dRun, bRun) = try await both.run([
            "run", "-d", "--name", "judged", "--network", "none", "-e", "A=b", "--label", "tier=front", "--label", "com.example.team=core",
            "-m", "64m", "--pids-limit", "50", "--restart", "on-failure:3", "-w", "/tmp", "-v", "\(bind):/data:ro", "busybox", "sleep", "100",
        ])
        try #require(dRun.status == 0 && bRun.status == 0, "docker: \(dRun.stderr) berth: \(bRun.stderr)")
        try await both.same(["run", "--name", "exited", "--network", "none", "busybox", "sh", "-c", "echo out; exit 3"])
        try await both.same(["run", "--rm", "--network", "none", "busybox", "false"])
        try await both.same(["run", "--rm", "--network", "none", "busybox", "nosuchcommand"])
        try await both.same(["create", "--name", "made", "--network", "none", "--read-only", "--cap-add", "NET_ADMIN", "busybox"], id: true)

        // Exit codes: run's own failures are 125, the command's 126/127, an unknown command 1.
        try await both.same(["run", "--rm", "--nosuchflag", "busybox", "true"])
        try await both.same(["run", "--rm", "--name", "judged", "--network", "none", "busybox", "true"])
        try await both.same(["nosuchcommand"])
        try await both.same(["container", "ls", "-a", "--filter", "name=exited", "--format", "{{.Names}} {{.State}}"])
        try await both.same(["container", "inspect", "-f", "{{len .ID}} {{.Name}}", "exited"])
        try await both.same(["restart", "-t", "1", "exited"])
        try await both.same(["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}", "exited"])

        // Flags: --env-file under -e, negative values without "=", ps -n and ancestor=, images filters.
        let envFile = bind + "/env.list"
        try "# a comment\nA=1\n\nB=two words\n".write(toFile: envFile, atomically: true, encoding: .utf8)
        try await both.same(["run", "--rm", "--network", "none", "--env-file", envFile, "-e", "A=3", "busybox", "sh", "-c", "echo $A $B"])
        try await both.same(["run", "--rm", "--network", "none", "--env-file", bind + "/nosuch", "busybox", "true"])
        try await both.same(["create", "--name", "unlimited", "--network", "none", "--pids-limit", "-1", "busybox", "true"], id: true)
        try await both.same(["ps", "-a", "-n", "1", "--format", "{{.Names}}"])
        try await both.same(["ps", "-l", "--format", "{{.Names}} {{.State}}"])
        try await both.same(["ps", "-a", "--filter", "ancestor=busybox", "--filter", "name=exited", "--format", "{{.Names}}"])
        try await both.same(["rm", "unlimited"])
        try await both.same(["images", "--filter", "reference=busy*", "--format", "{{.Repository}}"])
        try await both.same(["images", "-q", "--filter", "dangling=true"])

        // --add-host: the entries in /etc/hosts, and in inspect.
        try await both.same(["run", "--rm", "--network", "none", "--add-host", "db:10.1.2.3", "--add-host", "v6:::1", "busybox", "grep", "-E", "db|v6", "/etc/hosts"])
        try await both.same(["run", "--rm", "--network", "none", "--add-host", "db:nohost", "busybox", "true"])
        try await both.same(["create", "--name", "hosted", "--network", "none", "--add-host", "db:10.1.2.3", "busybox", "true"], id: true)
        try await both.same(["inspect", "-f", "{{json .HostConfig.ExtraHosts}}", "hosted"])
        try await both.same(["rm", "hosted"])

        // exec: the exit code, the environment with a terminal (TERM=xterm), -e over it.
        try await both.same(["exec", "judged", "sh", "-c", "exit 5"])
        try await both.same(["exec", "-t", "judged", "sh", "-c", "echo $TERM"])
        try await both.same(["exec", "-t", "-e", "TERM=vt100", "judged", "sh", "-c", "echo $TERM"])
        try await both.same(["exec", "judged", "sh", "-c", "echo [$TERM]"])

        // top: the host's ps, the container's processes (PIDs and times differ; the columns and commands do not).
        let (dTop, bTop) = try await both.run(["top", "judged"])
        let shape = { (text: String) in text.split(separator: "\n").map { line in
            [line.split(separator: " ").first.map(String.init) ?? "", line.split(separator: " ", omittingEmptySubsequences: true).suffix(2).joined(separator: " ")] } }
        #expect(bTop.status == dTop.status && shape(bTop.stdout) == shape(dTop.stdout), "docker \(dTop.stdout) berth \(bTop.stdout)")
        #expect(bTop.stdout.split(separator: "\n").first == dTop.stdout.split(separator: "\n").first, "docker \(dTop.stdout) berth \(bTop.stdout)")
        let (dStopped, bStopped) = try await both.run(["top", "exited"])
        #expect(dStopped.status != 0 && bStopped.status != 0 && bStopped.stderr.contains("is not running"), "\(bStopped)")

        // inspect -f, docker's documented uses among them.
        for template in [
            "{{.State.Status}} {{.State.Running}} {{.State.Paused}} {{.State.OOMKilled}} {{.State.Dead}} {{.State.ExitCode}} {{.State.Error}}",
            "{{.Name}} {{.RestartCount}} {{.Path}} {{json .Args}}",
            "{{.HostConfig.NetworkMode}} [{{.NetworkSettings.IPAddress}}] {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}",
            "{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}} {{.HostConfig.Privileged}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.AutoRemove}}",
            "{{json .HostConfig.CapAdd}} {{json .HostConfig.Binds}}",
            "{{json .Config.Cmd}} {{json .Config.Entrypoint}} {{.Config.Image}} {{.Config.WorkingDir}} {{.Config.User}} {{.Config.Tty}} {{.Config.OpenStdin}}",
            "{{json .Config.Labels}} {{index .Config.Labels \"tier\"}} [{{index .Config.Labels \"nosuch\"}}] {{.Config.Labels.nosuch}}",
            "{{range .Config.Env}}{{if eq . \"A=b\"}}{{.}}{{end}}{{end}}",
            "{{len .Mounts}}{{range .Mounts}} {{.Type}} {{.Source}} {{.Destination}} {{.RW}} {{.Mode}}{{end}}",
            "{{if .State.Running}}up{{else}}down{{end}} {{with .State.Health}}{{.Status}}{{else}}no check{{end}}",
            "{{printf \"%s-%d\" .State.Status .State.ExitCode}} {{upper .State.Status}} {{title \"a b\"}} {{join .Config.Cmd \",\"}} {{split \"a:b\" \":\"}}",
        ] {
            try await both.same(["inspect", "-f", template, "judged", "exited", "made"])
        }
        // Names that are not there, and templates that read what is not there.
        try await both.same(["inspect", "-f", "{{.Name}}", "judged", "nosuch"])
        try await both.same(["inspect", "nosuch"])
        try await both.same(["inspect", "-f", "{{.State.Nosuch}}", "judged"])
        try await both.same(["inspect", "-f", "{{.State.Health.Status}}", "judged"])
        try await both.same(["inspect", "--type", "container", "-f", "{{.Id}}", "nosuch"])

        // ps with templates and tables.
        try await both.same(["ps", "--filter", "name=judged", "--format", "{{.Names}}\t{{.Command}}\t{{.State}}\t{{.Label \"tier\"}}"])
        try await both.same(["ps", "--filter", "name=judged", "--format", "table {{.Names}}\t{{.Image}}\t{{.Label \"com.example.team\"}}\t{{.Mounts}}\t{{.Networks}}"])
        try await both.same(["ps", "-a", "--filter", "name=exited", "--format", "{{.Names}} {{.State}} {{printf \"%.10s\" .Status}}"])
        try await both.same(["ps", "-a", "--filter", "name=made", "--format", "{{.Names}} {{.Status}} {{.Ports}}"])
        // docker 20.10 spells `--format json` as `{{json .}}` (docker 23 takes both, as berth does).
        let dJSON = try await docker.docker(["ps", "--filter", "name=judged", "--format", "{{json .}}"])
        let bJSON = try await host.berth(["ps", "--filter", "name=judged", "--format", "json"])
        let keys = { (text: String) in
            Set(((try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any])?.keys.map { $0 } ?? [])
        }
        #expect(!keys(dJSON.stdout).isEmpty && keys(bJSON.stdout) == keys(dJSON.stdout), "docker \(dJSON.stdout) berth \(bJSON.stdout)")

        // Images and volumes.
        try await both.same(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        try await both.same(["image", "inspect", "-f", "{{.Os}} {{.Architecture}} {{json .RepoTags}}", "busybox"])
        try await both.same(["volume", "create", "--label", "a=b", "judgevol"])
        try await both.same(["volume", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Scope}} {{json .Labels}} {{.Options}}", "judgevol"])
        try await both.same(["volume", "ls", "--format", "{{.Name}} {{.Driver}}"])
        try await both.same(["volume", "ls", "--format", "table {{.Name}}\t{{.Driver}}\t{{.Label \"a\"}}"])
        try await both.same(["volume", "rm", "judgevol"])
        try await both.same(["rm", "-f", "judged", "exited", "made"])

        // Prunes: stopped containers and networks without containers go; a "no" keeps them.
        try await both.same(["create", "--name", "pruned", "--network", "none", "busybox", "true"], id: true)
        let (dNo, bNo) = try await both.run(["container", "prune"])
        #expect(dNo.status == bNo.status && bNo.stdout.hasPrefix("WARNING! This will remove all stopped containers."), "\(bNo)")
        try await both.same(["ps", "-aq", "--filter", "name=pruned"], id: true)
        let (dPrune, bPrune) = try await both.run(["container", "prune", "-f"])
        #expect(dPrune.status == 0 && bPrune.status == 0 && bPrune.stdout.hasPrefix("Deleted Containers:\n"), "\(bPrune)")
        try await both.same(["ps", "-aq", "--filter", "name=pruned"])
        try await both.same(["images", "-q", "--filter", "dangling=true"])
    }
}
