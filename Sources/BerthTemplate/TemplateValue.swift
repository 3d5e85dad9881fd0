/// A value a template reads, shaped as Go's values are: a struct's fields
/// keep their order and a missing one is an error (or `<no value>`, as a
/// map's), a map prints its keys sorted, a nil slice prints `[]` and
/// encodes as `null`.
public indirect enum TemplateValue: Sendable {
    /// What a map lookup of a missing key yields (prints `<no value>`).
    case noValue
    /// A nil pointer or interface (prints `<nil>`, encodes as `null`).
    case null
    /// A nil pointer in a field marked `omitempty`: prints `<nil>`, and
    /// the field is left out of JSON (and of the raw map `docker inspect`
    /// falls back to, so a field of it is "no entry").
    case omitted
    /// A nil slice (prints `[]`, encodes as `null`).
    case nilList
    /// A nil map (prints `map[]`, encodes as `null`).
    case nilMap
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case list([TemplateValue])
    /// A map: printed and encoded with its keys sorted.
    case map([String: TemplateValue])
    /// A struct: its fields in order, and its methods.
    case object(TemplateObject)
    /// A method value: called with its arguments.
    case function(TemplateFunction)

    /// A struct with these fields, in this order (and Go names for some).
    public static func object(
        _ typeName: String, _ fields: KeyValuePairs<String, TemplateValue>, aliases: [String: String] = [:], omitEmpty: Set<String> = []
    ) -> TemplateValue {
        .object(TemplateObject(typeName: typeName, fields: fields.map { ($0.key, $0.value) }, aliases: aliases, omitEmpty: omitEmpty))
    }

    /// A string, or `null` for nil.
    public static func string(_ text: String?) -> TemplateValue { text.map { .string($0) } ?? .null }

    /// A list of strings, or a nil slice for nil.
    public static func strings(_ items: [String]?) -> TemplateValue {
        items.map { .list($0.map { .string($0) }) } ?? .nilList
    }

    /// A map of strings, or a nil map for nil.
    public static func strings(_ items: [String: String]?) -> TemplateValue {
        items.map { .map($0.mapValues { .string($0) }) } ?? .nilMap
    }

    public static func integer<I: BinaryInteger>(_ value: I) -> TemplateValue { .int(Int64(value)) }

    /// Go's truth: false, 0, nil and empty things are false; a struct is true.
    public var isTrue: Bool {
        switch self {
        case .noValue, .null, .omitted, .nilList, .nilMap: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.isEmpty
        case .map(let m): return !m.isEmpty
        case .object, .function: return true
        }
    }

    /// A field of a struct or a key of a map, if there is one.
    public subscript(field: String) -> TemplateValue? {
        switch self {
        case .object(let object): return object.field(field)
        case .map(let map): return map[field]
        default: return nil
        }
    }

    /// The name Go's errors give this value's type.
    var typeName: String {
        switch self {
        case .noValue: return "<no value>"
        case .null, .omitted: return "interface {}"
        case .nilList, .list: return "[]interface {}"
        case .nilMap, .map: return "map[string]interface {}"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float64"
        case .string: return "string"
        case .object(let object): return object.typeName
        case .function: return "func"
        }
    }
}

/// A struct's fields in order and the methods it answers.
public struct TemplateObject: Sendable {
    public var typeName: String
    public var fields: [(String, TemplateValue)]
    public var methods: [String: TemplateFunction]
    /// Encoded as docker's formatter contexts encode themselves: a map of
    /// their fields, keys sorted, `<`, `>` and `&` escaped.
    public var encodesAsMap: Bool
    /// Go field names whose JSON key differs (`APIVersion` for `ApiVersion`):
    /// templates may read a field by either, as docker's typed structs and
    /// their raw JSON allow.
    public var aliases: [String: String]
    /// Fields marked `omitempty`: left out of JSON when empty ("", 0,
    /// false, nil), read by templates as they are.
    public var omitEmpty: Set<String>

    public init(
        typeName: String, fields: [(String, TemplateValue)], methods: [String: TemplateFunction] = [:], encodesAsMap: Bool = false,
        aliases: [String: String] = [:], omitEmpty: Set<String> = []
    ) {
        self.typeName = typeName
        self.fields = fields
        self.methods = methods
        self.encodesAsMap = encodesAsMap
        self.aliases = aliases
        self.omitEmpty = omitEmpty
    }

    public func field(_ name: String) -> TemplateValue? {
        if let found = fields.first(where: { $0.0 == name }) { return found.1 }
        if let key = aliases[name], let found = fields.first(where: { $0.0 == key }) { return found.1 }
        return methods[name].map { .function($0) }
    }
}

/// A function a template calls: its arguments, evaluated, in order.
public struct TemplateFunction: Sendable {
    public let call: @Sendable ([TemplateValue]) throws -> TemplateValue

    public init(_ call: @escaping @Sendable ([TemplateValue]) throws -> TemplateValue) { self.call = call }
}

// MARK: - Printing, as Go's fmt prints with %v

extension TemplateValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .noValue: return "<no value>"
        case .null, .omitted: return "<nil>"
        case .nilList: return "[]"
        case .nilMap: return "map[]"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return GoFloat.format(d)
        case .string(let s): return s
        case .list(let l): return "[" + l.map(\.description).joined(separator: " ") + "]"
        case .map(let m): return "map[" + m.keys.sorted().map { "\($0):\(m[$0]!.description)" }.joined(separator: " ") + "]"
        case .object(let o): return "{" + o.fields.map(\.1.description).joined(separator: " ") + "}"
        case .function: return "<func>"
        }
    }

    /// `%+v`: a struct's fields with their names.
    var describedWithNames: String {
        switch self {
        case .object(let o): return "{" + o.fields.map { "\($0.0):\($0.1.describedWithNames)" }.joined(separator: " ") + "}"
        case .list(let l): return "[" + l.map(\.describedWithNames).joined(separator: " ") + "]"
        case .map(let m): return "map[" + m.keys.sorted().map { "\($0):\(m[$0]!.describedWithNames)" }.joined(separator: " ") + "]"
        default: return description
        }
    }
}

/// Floating-point numbers as Go prints them.
enum GoFloat {
    /// The shortest digits that read back as `value`, and the decimal
    /// exponent: value = 0.DIGITS × 10^point.
    static func decimal(_ value: Double) -> (digits: [UInt8], point: Int) {
        // Swift's description is the shortest round-trip form: "1234.5", "1.5e-07", "1e+20".
        let text = "\(value.magnitude)"
        var mantissa = Substring(text)
        var exponent = 0
        if let e = text.firstIndex(of: "e") {
            mantissa = text[..<e]
            exponent = Int(text[text.index(after: e)...]) ?? 0
        }
        let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        let whole = Array(parts[0].utf8).map { $0 - 48 }
        let fraction = parts.count > 1 ? Array(parts[1].utf8).map { $0 - 48 } : []
        var digits = whole + fraction
        var point = whole.count + exponent
        while let first = digits.first, first == 0, digits.count > 1 {
            digits.removeFirst()
            point -= 1
        }
        while let last = digits.last, last == 0, digits.count > 1 { digits.removeLast() }
        if digits == [0] { point = 1 }
        return (digits, point)
    }

    /// `%v` of a float64: %g with the shortest digits, exponent form when
    /// the exponent is below -4 or at least 6 (`1e+06`, `123456`).
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Inf" : "+Inf" }
        let (digits, point) = decimal(value)
        let sign = value.sign == .minus ? "-" : ""
        let exponent = point - 1
        let text = digits.map { String($0) }.joined()
        if exponent < -4 || exponent >= 6 {
            let mantissa = digits.count > 1 ? text.prefix(1) + "." + text.dropFirst() : Substring(text)
            let e = abs(exponent)
            return sign + mantissa + (exponent < 0 ? "e-" : "e+") + (e < 10 ? "0\(e)" : "\(e)")
        }
        return sign + fixed(digits, point)
    }

    /// The digits written out with a decimal point, no exponent.
    static func fixed(_ digits: [UInt8], _ point: Int) -> String {
        let text = digits.map { String($0) }.joined()
        if point <= 0 { return "0." + String(repeating: "0", count: -point) + text }
        if point >= digits.count { return text + String(repeating: "0", count: point - digits.count) }
        return String(text.prefix(point)) + "." + String(text.dropFirst(point))
    }
}

// MARK: - JSON, as Go's encoding/json writes it

extension TemplateValue {
    /// Go's `json.Marshal` of the value; `escapeHTML` as its default
    /// encoder does (`<`, `>`, `&` as \u003c…). `indent` as MarshalIndent's.
    public func json(escapeHTML: Bool = true, indent: String? = nil) -> String {
        var out = ""
        writeJSON(into: &out, escapeHTML: escapeHTML, indent: indent, depth: 0)
        return out
    }

    private func writeJSON(into out: inout String, escapeHTML: Bool, indent: String?, depth: Int) {
        func newline(_ level: Int) {
            guard let indent else { return }
            out += "\n" + String(repeating: indent, count: level)
        }
        func members(_ pairs: [(String, TemplateValue)], omitEmpty: Set<String> = []) {
            let pairs = pairs.filter { !omitEmpty.contains($0.0) || $0.1.isTrue }
            guard !pairs.isEmpty else {
                out += "{}"
                return
            }
            out += "{"
            for (i, (key, value)) in pairs.filter({ if case .omitted = $0.1 { false } else { true } }).enumerated() {
                if i > 0 { out += "," }
                newline(depth + 1)
                out += Self.quoted(key, escapeHTML: escapeHTML)
                out += indent == nil ? ":" : ": "
                value.writeJSON(into: &out, escapeHTML: escapeHTML, indent: indent, depth: depth + 1)
            }
            newline(depth)
            out += "}"
        }
        switch self {
        case .noValue, .null, .omitted, .nilList, .nilMap, .function: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += Self.jsonNumber(d)
        case .string(let s): out += Self.quoted(s, escapeHTML: escapeHTML)
        case .list(let items):
            guard !items.isEmpty else {
                out += "[]"
                return
            }
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                newline(depth + 1)
                item.writeJSON(into: &out, escapeHTML: escapeHTML, indent: indent, depth: depth + 1)
            }
            newline(depth)
            out += "]"
        case .map(let map): members(map.keys.sorted().map { ($0, map[$0]!) })
        case .object(let object) where object.encodesAsMap:
            out += TemplateValue.map(Dictionary(object.fields, uniquingKeysWith: { $1 })).json(escapeHTML: true, indent: indent)
        case .object(let object): members(object.fields, omitEmpty: object.omitEmpty)
        }
    }

    /// A float64 as encoding/json writes it: fixed notation, exponent
    /// notation below 1e-6 or from 1e21.
    static func jsonNumber(_ value: Double) -> String {
        guard value.isFinite else { return "null" }
        let magnitude = value.magnitude
        if magnitude != 0 && (magnitude < 1e-6 || magnitude >= 1e21) {
            let (digits, point) = GoFloat.decimal(value)
            let text = digits.map { String($0) }.joined()
            let mantissa = digits.count > 1 ? text.prefix(1) + "." + text.dropFirst() : Substring(text)
            let e = point - 1
            return (value < 0 ? "-" : "") + mantissa + (e < 0 ? "e-" : "e+") + (abs(e) < 10 ? "0\(abs(e))" : "\(abs(e))")
        }
        let (digits, point) = GoFloat.decimal(value)
        return (value < 0 ? "-" : "") + GoFloat.fixed(digits, point)
    }

    /// A JSON string literal (as Go's strconv.Quote writes most strings).
    public static func quoted(_ text: String, escapeHTML: Bool) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<" where escapeHTML, ">" where escapeHTML, "&" where escapeHTML, "\u{2028}", "\u{2029}":
                out += "\\u" + hex4(scalar.value)
            default:
                if scalar.value < 0x20 { out += "\\u" + hex4(scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        return out + "\""
    }

    private static func hex4(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
