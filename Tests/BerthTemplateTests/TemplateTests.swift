import BerthTemplate
import Testing

/// A container as `docker inspect` shapes it, in part.
private let container: TemplateValue = .object(
    "*types.ContainerJSON",
    [
        "Id": .string("4f66ad9a0b2e"),
        "Name": .string("/web"),
        "State": .object(
            "*types.ContainerState",
            [
                "Status": .string("running"), "Running": .bool(true), "OOMKilled": .bool(false), "Pid": .int(4242), "ExitCode": .int(0),
                "Health": .omitted,
            ]),
        "Config": .object(
            "*container.Config",
            [
                "Env": .strings(["PATH=/usr/bin", "A=b"]), "Cmd": .strings(["sleep", "100"]), "Entrypoint": .nilList,
                "Labels": .strings(["com.example.vendor": "ACME", "tier": "front"]),
            ]),
        "Mounts": .list([
            .object("types.MountPoint", ["Type": .string("volume"), "Source": .string("/var/lib/x"), "Destination": .string("/data"), "RW": .bool(true)]),
            .object("types.MountPoint", ["Type": .string("bind"), "Source": .string("/etc/hosts"), "Destination": .string("/h"), "RW": .bool(false)]),
        ]),
        "NetworkSettings": .object(
            "*types.NetworkSettings",
            [
                "IPAddress": .string("172.17.0.2"),
                "Networks": .map(["bridge": .object("*network.EndpointSettings", ["IPAddress": .string("172.17.0.2"), "Gateway": .string("172.17.0.1")])]),
            ]),
    ])

private func run(_ text: String, _ data: TemplateValue = container, missing: Template.MissingField = .error) throws -> String {
    try Template(text).execute(data, missingField: missing)
}

@Suite struct TemplateTests {
    @Test func fieldsAsDockerDocumentsThem() throws {
        #expect(try run("{{.State.Status}}") == "running")
        #expect(try run("{{.State.OOMKilled}}") == "false")
        #expect(try run("{{.State.Pid}}") == "4242")
        #expect(try run("{{.NetworkSettings.IPAddress}}") == "172.17.0.2")
        #expect(try run("{{json .Config.Env}}") == #"["PATH=/usr/bin","A=b"]"#)
        #expect(try run("{{.Config.Env}}") == "[PATH=/usr/bin A=b]")
        #expect(try run("{{.Config.Labels}}") == "map[com.example.vendor:ACME tier:front]")
        #expect(try run("{{.Config.Entrypoint}}") == "[]")
        #expect(try run("{{json .Config.Entrypoint}}") == "null")
        #expect(try run("{{.State.Health}}") == "<nil>")
        // docker's documented examples
        #expect(try run("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}") == "172.17.0.2")
        #expect(try run("{{range .Mounts}}{{.Source}}:{{.Destination}} {{end}}") == "/var/lib/x:/data /etc/hosts:/h ")
        #expect(try run("{{(index .NetworkSettings.Networks \"bridge\").Gateway}}") == "172.17.0.1")
        #expect(try run("{{index .Config.Labels \"com.example.vendor\"}}") == "ACME")
        #expect(try run("{{index .Config.Labels \"nosuch\"}}") == "")
        #expect(try run("{{.Name}} {{.Id}}") == "/web 4f66ad9a0b2e")
    }

    @Test func missingFields() throws {
        #expect(throws: TemplateError.self) { try run("{{.State.Nosuch}}") }
        do {
            _ = try run("{{.State.Nosuch}}")
        } catch let error as TemplateError {
            #expect(error.message == "template: :1: executing \"\" at <.State.Nosuch>: can't evaluate field Nosuch in type *types.ContainerState")
        }
        // In the words of docker inspect's second try, on the raw JSON.
        for (text, key) in [("{{.State.Nosuch}}", "Nosuch"), ("{{.State.Health.Status}}", "Health")] {
            do {
                _ = try run(text, missing: .mapError)
                Issue.record("\(text) ran")
            } catch let error as TemplateError {
                #expect(error.message.hasSuffix("map has no entry for key \"\(key)\""), "\(error)")
            }
        }
        #expect(try run("{{.Config.Labels.nosuch}}") == "<no value>")
        #expect(throws: TemplateError.self) { try run("{{.State.Health.Status}}") }
    }

    @Test func controlStructures() throws {
        #expect(try run("{{if .State.Running}}up{{else}}down{{end}}") == "up")
        #expect(try run("{{if .State.OOMKilled}}oom{{else if .State.Running}}running{{else}}no{{end}}") == "running")
        #expect(try run("{{if not .State.Running}}a{{else if .State.OOMKilled}}b{{else}}c{{end}}") == "c")
        #expect(try run("{{with .State}}{{.Status}}{{end}}") == "running")
        #expect(try run("{{with .State.Health}}{{.Status}}{{else}}none{{end}}") == "none")
        #expect(try run("{{range $i, $e := .Config.Env}}{{$i}}={{$e}};{{end}}") == "0=PATH=/usr/bin;1=A=b;")
        #expect(try run("{{range $k, $v := .Config.Labels}}{{$k}}:{{$v}},{{end}}") == "com.example.vendor:ACME,tier:front,")
        #expect(try run("{{range .Config.Entrypoint}}x{{else}}empty{{end}}") == "empty")
        #expect(try run("{{range .Config.Env}}{{if eq . \"A=b\"}}{{break}}{{end}}{{.}} {{end}}") == "PATH=/usr/bin ")
        #expect(try run("{{range .Config.Env}}{{if eq . \"PATH=/usr/bin\"}}{{continue}}{{end}}{{.}}{{end}}") == "A=b")
        #expect(try run("{{$n := len .Config.Env}}{{$n}} {{$n = 7}}{{$n}}") == "2 7")
        #expect(try run("{{$.Name}}{{with .State}}{{$.Name}}{{end}}") == "/web/web")
        #expect(try run("{{define \"T\"}}<{{.}}>{{end}}{{template \"T\" .State.Status}}") == "<running>")
        #expect(try run("a {{- \" b \" -}} c") == "a b c")
        #expect(try run("a  {{- /* comment */ -}}  b") == "ab")
        #expect(try run("{{/* a comment */}}x") == "x")
    }

    @Test func functions() throws {
        #expect(try run("{{len .Mounts}}") == "2")
        #expect(try run("{{join .Config.Cmd \" \"}}") == "sleep 100")
        #expect(try run("{{split \"a,b,c\" \",\"}}") == "[a b c]")
        #expect(try run("{{index (split \"a:b\" \":\") 1}}") == "b")
        #expect(try run("{{upper .State.Status}} {{lower \"ABC\"}} {{title \"hello world\"}}") == "RUNNING abc Hello World")
        #expect(try run("{{pad \"x\" 2 1}}|{{truncate \"abcdef\" 3}}|{{truncate \"ab\" 3}}") == "  x |abc|ab")
        #expect(try run("{{printf \"%s-%d-%5.2f|%-4s|%03d|%q|%v|%x\" \"a\" 7 3.14159 \"ab\" 5 \"q\" true 255}}") == "a-7- 3.14|ab  |005|\"q\"|true|ff")
        #expect(try run("{{printf \"%d\" \"x\"}}") == "%!d(string=x)")
        // Fields apart are arguments apart; joined they are one chain.
        #expect(try run("{{printf \"%s-%d\" .State.Status .State.Pid}} {{ .Name }} {{(index .Mounts 1).Source}}") == "running-4242 /web /etc/hosts")
        #expect(try run("{{print 1 2 \"a\" \"b\" 3}}") == "1 2ab3")
        #expect(try run("{{println \"a\" 1}}") == "a 1\n")
        #expect(try run("{{eq .State.Status \"exited\" \"running\"}} {{ne 1 2}} {{lt 1 2}} {{ge 2.5 3}}") == "true true true false")
        #expect(try run("{{and 1 0 2}} {{or 0 \"\" \"x\"}} {{and 1 2}}") == "0 x 2")
        #expect(try run("{{.State.Status | printf \"%s!\"}}") == "running!")
        #expect(try run("{{json .State}}") == #"{"Status":"running","Running":true,"OOMKilled":false,"Pid":4242,"ExitCode":0}"#)
        #expect(try run("{{json .Config.Labels}}") == #"{"com.example.vendor":"ACME","tier":"front"}"#)
        #expect(try run("{{json \"<a&b>\"}}") == #""<a&b>""#)
        #expect(try run("{{html \"<a>\"}} {{urlquery \"a b/c\"}} {{js \"it's\"}}") == "&lt;a&gt; a+b%2Fc it\\'s")
        #expect(try run("{{slice \"abcdef\" 1 3}} {{slice .Config.Env 1}}") == "bc [A=b]")
        #expect(try run("{{.State}}") == "{running true false 4242 0 <nil>}")
        #expect(try run("{{printf \"%+v\" .State}}") == "{Status:running Running:true OOMKilled:false Pid:4242 ExitCode:0 Health:<nil>}")
        #expect(try run("{{1.5}} {{1e6}} {{0x1F}} {{'a'}} {{-3}}") == "1.5 1e+06 31 97 -3")
    }

    @Test func methods() throws {
        let row = TemplateValue.object(
            TemplateObject(
                typeName: "*formatter.ContainerContext", fields: [("Names", .string("web"))],
                methods: [
                    "Label": TemplateFunction { args in
                        guard case .string(let key)? = args.first else { throw TemplateError("wrong type for value; expected string") }
                        return .string(key == "tier" ? "front" : "")
                    }
                ]))
        #expect(try run("{{.Names}} {{.Label \"tier\"}}", row) == "web front")
        #expect(try run("{{\"tier\" | .Label}}", row) == "front")
    }

    @Test func parseErrorsSayWhere() {
        for (text, message) in [
            ("{{.State.Status", "template: :1: unclosed action"),
            ("{{if .X}}a", "template: :1: unexpected EOF in if"),
            ("{{end}}", "template: :1: unexpected {{end}}"),
            ("{{nosuch .X}}", "template: :1: function \"nosuch\" not defined"),
            ("{{\"a}}", "template: :1: unterminated quoted string"),
            ("a\n{{.X | }}", "template: :2: missing value for command"),
        ] {
            #expect(throws: TemplateError.self) { try Template(text) }
            do {
                _ = try Template(text)
            } catch let error as TemplateError {
                #expect(error.message == message, "\(text)")
            } catch {}
        }
        #expect(throws: TemplateError.self) { try run("{{index .Config.Env 5}}") }
        #expect(throws: TemplateError.self) { try run("{{len 3}}") }
        #expect(throws: TemplateError.self) { try run("{{range .State}}{{end}}") }
    }

    @Test func floatsAsGoPrintsThem() throws {
        for (value, text) in [(0.1, "0.1"), (100.0, "100"), (123456.0, "123456"), (1234567.0, "1.234567e+06"), (1e21, "1e+21"), (0.00001, "1e-05"), (-2.5, "-2.5"), (0.0, "0")] {
            #expect(TemplateValue.double(value).description == text)
        }
        #expect(TemplateValue.list([.double(1.5), .double(1e21), .double(0.0000001)]).json() == "[1.5,1e+21,1e-07]")
    }

    @Test func omitEmptyAndGoNames() throws {
        let message = TemplateValue.object(
            "events.Message", ["status": .string(""), "Type": .string("volume"), "time": .int(0)], aliases: ["Status": "status", "Time": "time"],
            omitEmpty: ["status", "time"])
        #expect(message.json() == #"{"Type":"volume"}"#)
        #expect(try run("[{{.Status}}] [{{.status}}] {{.Time}} {{.Type}}", message) == "[] [] 0 volume")
    }

    @Test func jsonAsGoEncodesIt() {
        let value = TemplateValue.object("T", ["A": .string("<x>\n\u{1}"), "B": .list([]), "C": .nilMap, "D": .map([:]), "E": .int(-1)])
        #expect(value.json() == #"{"A":"\u003cx\u003e\n\u0001","B":[],"C":null,"D":{},"E":-1}"#)
        #expect(value.json(escapeHTML: false, indent: "    ") == "{\n    \"A\": \"<x>\\n\\u0001\",\n    \"B\": [],\n    \"C\": null,\n    \"D\": {},\n    \"E\": -1\n}")
    }
}

@Suite struct DockerFormatTests {
    private let rows: [TemplateValue] = [
        .object("*formatter.ContainerContext", ["ID": .string("4f66ad9a0b2e"), "Names": .string("web"), "Status": .string("Up 2 minutes")]),
        .object("*formatter.ContainerContext", ["ID": .string("1a2b3c4d5e6f"), "Names": .string("a-much-longer-name"), "Status": .string("Exited (0) 5 seconds ago")]),
    ]
    private let header: TemplateValue = .object("formatter.SubHeaderContext", ["ID": .string("CONTAINER ID"), "Names": .string("NAMES"), "Status": .string("STATUS")])

    @Test func tableAlignsAsTabwriter() throws {
        let format = try DockerFormat("table {{.ID}}\t{{.Names}}\t{{.Status}}", defaultTable: "")
        #expect(
            try format.render(rows, header: header) == """
                CONTAINER ID   NAMES                STATUS
                4f66ad9a0b2e   web                  Up 2 minutes
                1a2b3c4d5e6f   a-much-longer-name   Exited (0) 5 seconds ago

                """)
        // Short columns are ten wide at least; `\t` typed as two characters is a tab.
        let short = try DockerFormat(#"table {{.Names}}\t{{.Status}}"#, defaultTable: "")
        #expect(try short.render([rows[0]], header: header) == "NAMES     STATUS\nweb       Up 2 minutes\n")
        #expect(try DockerFormat("table", defaultTable: "{{.Names}}").render([rows[0]], header: header) == "NAMES\nweb\n")
        #expect(try DockerFormat(nil, defaultTable: "{{.Names}}").kind == .table)
    }

    @Test func templatesAndJSON() throws {
        #expect(try DockerFormat("{{.Names}}: {{.Status}}", defaultTable: "").render(rows, header: header) == "web: Up 2 minutes\na-much-longer-name: Exited (0) 5 seconds ago\n")
        #expect(try DockerFormat("json", defaultTable: "").render([rows[0]], header: header) == #"{"ID":"4f66ad9a0b2e","Names":"web","Status":"Up 2 minutes"}"# + "\n")
        // A formatter context encodes itself as a sorted map, HTML escaped.
        let context = TemplateValue.object(TemplateObject(typeName: "c", fields: [("Ports", .string("0.0.0.0:80->80/tcp")), ("ID", .string("x"))], encodesAsMap: true))
        #expect(try DockerFormat("json", defaultTable: "").render([context], header: header) == #"{"ID":"x","Ports":"0.0.0.0:80-\u003e80/tcp"}"# + "\n")
        // Header functions pass the column name through.
        #expect(try DockerFormat("table {{lower .Names}}", defaultTable: "").render([rows[0]], header: header) == "NAMES\nweb\n")
        #expect(throws: TemplateError.self) { try DockerFormat("{{.Names", defaultTable: "") }
        #expect(throws: TemplateError.self) { try DockerFormat("{{.Nosuch}}", defaultTable: "").render(rows, header: header) }
    }

    @Test func tabwriterBlocks() {
        // A line without the column ends its block: the next block is aligned on its own.
        #expect(TabWriter.align("a\tb\nccc\n1234567890123\tx\n", minWidth: 0, padding: 1) == "a b\nccc\n1234567890123 x\n")
    }
}
