/// The functions a template can call: Go's built-ins and docker's.
public enum TemplateFunctions {
    /// Go's text/template built-ins (`and` and `or` are the executor's own).
    public static let go: [String: TemplateFunction] = [
        "not": TemplateFunction { args in
            try count(args, 1, "not")
            return .bool(!args[0].isTrue)
        },
        "len": TemplateFunction { args in
            try count(args, 1, "len")
            switch args[0] {
            case .string(let s): return .integer(s.utf8.count)
            case .list(let l): return .integer(l.count)
            case .map(let m): return .integer(m.count)
            case .nilList, .nilMap: return .integer(0)
            default: throw TemplateError("len of type \(args[0].typeName)")
            }
        },
        "index": TemplateFunction { args in
            guard var value = args.first else { throw TemplateError("wrong number of args for index: want at least 1 got 0") }
            for key in args.dropFirst() {
                switch (value, key) {
                case (.list(let list), .int(let i)):
                    guard i >= 0, i < list.count else { throw TemplateError("index out of range: \(i)") }
                    value = list[Int(i)]
                case (.nilList, .int(let i)): throw TemplateError("index out of range: \(i)")
                case (.string(let s), .int(let i)):
                    let bytes = Array(s.utf8)
                    guard i >= 0, i < bytes.count else { throw TemplateError("index out of range: \(i)") }
                    value = .int(Int64(bytes[Int(i)]))
                case (.map(let map), .string(let k)):
                    // A missing key gives the zero value of the map's element type.
                    value = map[k] ?? (map.values.allSatisfy { if case .string = $0 { true } else { false } } ? .string("") : .noValue)
                case (.nilMap, .string): value = .string("")
                case (.noValue, _), (.null, _), (.omitted, _): throw TemplateError("index of untyped nil")
                default: throw TemplateError("can't index item of type \(value.typeName)")
                }
            }
            return value
        },
        "slice": TemplateFunction { args in
            guard let value = args.first else { throw TemplateError("wrong number of args for slice: want at least 1 got 0") }
            let bounds = try args.dropFirst().map { arg -> Int in
                guard case .int(let i) = arg else { throw TemplateError("cannot index slice/array with type \(arg.typeName)") }
                return Int(i)
            }
            switch value {
            case .list(let list):
                let (from, to) = try sliceBounds(bounds, list.count)
                return .list(Array(list[from..<to]))
            case .string(let s):
                let bytes = Array(s.utf8)
                let (from, to) = try sliceBounds(bounds, bytes.count)
                return .string(String(decoding: bytes[from..<to], as: UTF8.self))
            default: throw TemplateError("can't slice item of type \(value.typeName)")
            }
        },
        "print": TemplateFunction { args in .string(GoFormat.sprint(args)) },
        "println": TemplateFunction { args in .string(args.map(\.description).joined(separator: " ") + "\n") },
        "printf": TemplateFunction { args in
            guard case .string(let format)? = args.first else { throw TemplateError("wrong type for value; expected string") }
            return .string(GoFormat.sprintf(format, Array(args.dropFirst())))
        },
        "eq": TemplateFunction { args in
            guard args.count >= 2 else { throw TemplateError("missing argument for comparison") }
            for other in args.dropFirst() where try compare(args[0], other) == 0 { return .bool(true) }
            return .bool(false)
        },
        "ne": TemplateFunction { args in
            try count(args, 2, "ne")
            return .bool(try compare(args[0], args[1]) != 0)
        },
        "lt": TemplateFunction { args in
            try count(args, 2, "lt")
            return .bool(try compare(args[0], args[1], ordered: true) < 0)
        },
        "le": TemplateFunction { args in
            try count(args, 2, "le")
            return .bool(try compare(args[0], args[1], ordered: true) <= 0)
        },
        "gt": TemplateFunction { args in
            try count(args, 2, "gt")
            return .bool(try compare(args[0], args[1], ordered: true) > 0)
        },
        "ge": TemplateFunction { args in
            try count(args, 2, "ge")
            return .bool(try compare(args[0], args[1], ordered: true) >= 0)
        },
        "html": TemplateFunction { args in
            .string(
                GoFormat.sprint(args).map { c -> String in
                    switch c {
                    case "<": "&lt;"
                    case ">": "&gt;"
                    case "&": "&amp;"
                    case "\"": "&#34;"
                    case "'": "&#39;"
                    case "\0": "\u{FFFD}"
                    default: String(c)
                    }
                }.joined())
        },
        "js": TemplateFunction { args in
            .string(
                GoFormat.sprint(args).unicodeScalars.map { c -> String in
                    switch c {
                    case "\\": "\\\\"
                    case "'": "\\'"
                    case "\"": "\\\""
                    case "<": "\\u003C"
                    case ">": "\\u003E"
                    case "&": "\\u0026"
                    case "=": "\\u003D"
                    case "\n": "\\n"
                    case "\r": "\\r"
                    case "\t": "\\t"
                    default: String(c)
                    }
                }.joined())
        },
        "urlquery": TemplateFunction { args in
            var out = ""
            for byte in GoFormat.sprint(args).utf8 {
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                    UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                    out.unicodeScalars.append(Unicode.Scalar(byte))
                case UInt8(ascii: " "): out += "+"
                default:
                    let hex = String(byte, radix: 16, uppercase: true)
                    out += "%" + (hex.count == 1 ? "0" + hex : hex)
                }
            }
            return .string(out)
        },
        "call": TemplateFunction { args in
            guard case .function(let function)? = args.first else { throw TemplateError("call of non-function") }
            return try function.call(Array(args.dropFirst()))
        },
    ]

    /// Go's built-ins and docker's own (docker/cli `templates`).
    public static let docker: [String: TemplateFunction] = go.merging([
        // json.Encoder without HTML escaping, its newline trimmed.
        "json": TemplateFunction { args in
            try count(args, 1, "json")
            return .string(args[0].json(escapeHTML: false))
        },
        "split": TemplateFunction { args in
            try count(args, 2, "split")
            let (s, sep) = (try string(args[0]), try string(args[1]))
            return .list(GoFormat.split(s, sep).map { .string($0) })
        },
        "join": TemplateFunction { args in
            try count(args, 2, "join")
            let items: [String]
            switch args[0] {
            case .list(let list): items = try list.map { try string($0) }
            case .nilList: items = []
            default: throw TemplateError("wrong type for value; expected []string; got \(args[0].typeName)")
            }
            return .string(items.joined(separator: try string(args[1])))
        },
        "title": TemplateFunction { args in
            try count(args, 1, "title")
            var out = ""
            var previous: Character = " "
            for c in try string(args[0]) {
                out += previous.isLetter || previous.isNumber || previous == "_" || previous == "'" ? String(c) : c.uppercased()
                previous = c
            }
            return .string(out)
        },
        "lower": TemplateFunction { args in
            try count(args, 1, "lower")
            return .string(try string(args[0]).lowercased())
        },
        "upper": TemplateFunction { args in
            try count(args, 1, "upper")
            return .string(try string(args[0]).uppercased())
        },
        "pad": TemplateFunction { args in
            try count(args, 3, "pad")
            guard case .int(let before) = args[1], case .int(let after) = args[2] else { throw TemplateError("wrong type for value; expected int") }
            return .string(String(repeating: " ", count: Int(max(0, before))) + (try string(args[0])) + String(repeating: " ", count: Int(max(0, after))))
        },
        "truncate": TemplateFunction { args in
            try count(args, 2, "truncate")
            guard case .int(let length) = args[1] else { throw TemplateError("wrong type for value; expected int") }
            let s = try string(args[0])
            let bytes = Array(s.utf8)
            return bytes.count < length ? .string(s) : .string(String(decoding: bytes.prefix(Int(max(0, length))), as: UTF8.self))
        },
    ]) { $1 }

    /// Docker's functions as its table headers run them: each gives back
    /// its first argument (the header's name).
    public static let dockerHeader: [String: TemplateFunction] = Dictionary(
        uniqueKeysWithValues: ["json", "split", "join", "title", "lower", "upper", "pad", "truncate"].map { name in
            (name, TemplateFunction { args in args.first ?? .string("") })
        })

    private static func count(_ args: [TemplateValue], _ expected: Int, _ name: String) throws {
        guard args.count == expected else { throw TemplateError("wrong number of args for \(name): want \(expected) got \(args.count)") }
    }

    private static func string(_ value: TemplateValue) throws -> String {
        guard case .string(let s) = value else { throw TemplateError("wrong type for value; expected string; got \(value.typeName)") }
        return s
    }

    private static func sliceBounds(_ bounds: [Int], _ count: Int) throws -> (Int, Int) {
        guard bounds.count <= 2 else { throw TemplateError("too many slice indexes: \(bounds.count)") }
        let from = bounds.first ?? 0
        let to = bounds.count > 1 ? bounds[1] : count
        guard from >= 0, to <= count, from <= to else { throw TemplateError("index out of range: \(from):\(to)") }
        return (from, to)
    }

    /// Go's comparison: numbers with numbers, strings with strings, bools
    /// for equality only.
    static func compare(_ a: TemplateValue, _ b: TemplateValue, ordered: Bool = false) throws -> Int {
        switch (a, b) {
        case (.int(let x), .int(let y)): return x < y ? -1 : x == y ? 0 : 1
        case (.int(let x), .double(let y)): return Double(x) < y ? -1 : Double(x) == y ? 0 : 1
        case (.double(let x), .int(let y)): return x < Double(y) ? -1 : x == Double(y) ? 0 : 1
        case (.double(let x), .double(let y)): return x < y ? -1 : x == y ? 0 : 1
        case (.string(let x), .string(let y)): return x < y ? -1 : x == y ? 0 : 1
        case (.bool(let x), .bool(let y)) where !ordered: return x == y ? 0 : 1
        case (.null, .null) where !ordered: return 0
        default:
            if ordered { throw TemplateError("invalid type for comparison") }
            throw TemplateError("incompatible types for comparison")
        }
    }
}

/// Go's fmt, as far as templates use it.
enum GoFormat {
    /// fmt.Sprint: a space between operands when neither is a string.
    static func sprint(_ args: [TemplateValue]) -> String {
        var out = ""
        for (i, arg) in args.enumerated() {
            if i > 0, !isString(arg), !isString(args[i - 1]) { out += " " }
            out += arg.description
        }
        return out
    }

    private static func isString(_ value: TemplateValue) -> Bool {
        if case .string = value { return true }
        return false
    }

    /// strings.Split: an empty separator splits after each character.
    static func split(_ s: String, _ separator: String) -> [String] {
        if separator.isEmpty { return s.map { String($0) } }
        let text = Array(s.utf8)
        let sep = Array(separator.utf8)
        var parts: [String] = []
        var start = 0
        var i = 0
        while i + sep.count <= text.count {
            if text[i..<(i + sep.count)].elementsEqual(sep) {
                parts.append(String(decoding: text[start..<i], as: UTF8.self))
                i += sep.count
                start = i
            } else {
                i += 1
            }
        }
        parts.append(String(decoding: text[start...], as: UTF8.self))
        return parts
    }

    /// fmt.Sprintf for the verbs a template uses: %v %+v %s %q %d %x %X %o
    /// %b %c %f %e %g %t %%, with flags, width and precision.
    static func sprintf(_ format: String, _ args: [TemplateValue]) -> String {
        var out = ""
        var next = 0
        let chars = Array(format)
        var i = 0
        while i < chars.count {
            guard chars[i] == "%" else {
                out.append(chars[i])
                i += 1
                continue
            }
            i += 1
            var minus = false
            var plus = false
            var zero = false
            var space = false
            var sharp = false
            while i < chars.count, "-+0 #".contains(chars[i]) {
                switch chars[i] {
                case "-": minus = true
                case "+": plus = true
                case "0": zero = true
                case " ": space = true
                default: sharp = true
                }
                i += 1
            }
            var width: Int?
            while i < chars.count, let d = chars[i].wholeNumberValue {
                width = (width ?? 0) * 10 + d
                i += 1
            }
            var precision: Int?
            if i < chars.count, chars[i] == "." {
                i += 1
                precision = 0
                while i < chars.count, let d = chars[i].wholeNumberValue {
                    precision = precision! * 10 + d
                    i += 1
                }
            }
            guard i < chars.count else {
                out += "%!(NOVERB)"
                break
            }
            let verb = chars[i]
            i += 1
            if verb == "%" {
                out += "%"
                continue
            }
            guard next < args.count else {
                out += "%!\(verb)(MISSING)"
                continue
            }
            let arg = args[next]
            next += 1
            var text: String
            switch (verb, arg) {
            case ("v", _): text = plus ? arg.describedWithNames : arg.description
            case ("s", .string(let s)): text = precision.map { String(s.prefix($0)) } ?? s
            case ("s", .list), ("s", .map), ("s", .object), ("s", .bool), ("s", .null), ("s", .omitted), ("s", .nilList), ("s", .nilMap), ("s", .noValue):
                text = arg.description
            case ("q", .string(let s)): text = TemplateValue.quoted(s, escapeHTML: false)
            case ("t", .bool(let b)): text = b ? "true" : "false"
            case ("d", .int(let n)): text = String(n)
            case ("x", .int(let n)), ("X", .int(let n)), ("o", .int(let n)), ("b", .int(let n)):
                let radix = verb == "o" ? 8 : verb == "b" ? 2 : 16
                text = String(n, radix: radix, uppercase: verb == "X")
                if sharp, radix == 16 { text = (n < 0 ? "-0x" : "0x") + String(n.magnitude, radix: 16, uppercase: verb == "X") }
            case ("x", .string(let s)), ("X", .string(let s)):
                text = s.utf8.map { let h = String($0, radix: 16, uppercase: verb == "X"); return h.count == 1 ? "0" + h : h }.joined()
            case ("c", .int(let n)): text = Unicode.Scalar(UInt32(truncatingIfNeeded: n)).map { String(Character($0)) } ?? "\u{FFFD}"
            case ("f", .double), ("f", .int), ("F", .double), ("F", .int):
                text = fixed(number(arg), precision ?? 6)
            case ("e", .double), ("e", .int):
                text = exponent(number(arg), precision ?? 6)
            case ("g", .double), ("g", .int): text = GoFloat.format(number(arg))
            default:
                out += "%!\(verb)(\(arg.typeName)=\(arg.description))"
                continue
            }
            if plus, "dfFeg".contains(verb), !text.hasPrefix("-") { text = "+" + text }
            if space, "dfFeg".contains(verb), !text.hasPrefix("-"), !text.hasPrefix("+") { text = " " + text }
            if let width, text.count < width {
                let padding = width - text.count
                if minus {
                    text += String(repeating: " ", count: padding)
                } else if zero, "dxXobfFeg".contains(verb) {
                    let sign = text.first.map { "+- ".contains($0) } == true ? String(text.removeFirst()) : ""
                    text = sign + String(repeating: "0", count: padding) + text
                } else {
                    text = String(repeating: " ", count: padding) + text
                }
            }
            out += text
        }
        if next < args.count {
            out += "%!(EXTRA " + args[next...].map { "\($0.typeName)=\($0.description)" }.joined(separator: ", ") + ")"
        }
        return out
    }

    private static func number(_ value: TemplateValue) -> Double {
        switch value {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return 0
        }
    }

    /// %.Nf: rounded to N decimals.
    static func fixed(_ value: Double, _ precision: Int) -> String {
        guard value.isFinite else { return GoFloat.format(value) }
        var scale = 1.0
        for _ in 0..<precision { scale *= 10 }
        let scaled = (value.magnitude * scale).rounded()
        guard scaled < 9e18 else { return GoFloat.format(value) }
        let whole = UInt64(scaled)
        let digits = String(whole)
        let padded = String(repeating: "0", count: max(0, precision + 1 - digits.count)) + digits
        let sign = value < 0 && whole != 0 ? "-" : ""
        if precision == 0 { return sign + padded }
        return sign + padded.dropLast(precision) + "." + padded.suffix(precision)
    }

    /// %.Ne: one digit, N decimals, a two-digit exponent at least.
    static func exponent(_ value: Double, _ precision: Int) -> String {
        guard value != 0 else { return fixed(0, precision) + "e+00" }
        var e = 0
        var m = value.magnitude
        while m >= 10 { m /= 10; e += 1 }
        while m < 1 { m *= 10; e -= 1 }
        var mantissa = fixed(m, precision)
        if mantissa.hasPrefix("10") {
            m /= 10
            e += 1
            mantissa = fixed(m, precision)
        }
        return (value < 0 ? "-" : "") + mantissa + (e < 0 ? "e-" : "e+") + (abs(e) < 10 ? "0\(abs(e))" : "\(abs(e))")
    }
}
