/// A template that failed to parse or to run, in Go's words:
/// `template: :1:8: unexpected "}" in operand`.
public struct TemplateError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A parsed template's tree.
indirect enum TemplateNode: Sendable {
    case text(String)
    case action(Pipeline, line: Int)
    case ifNode(Pipeline, then: [TemplateNode], otherwise: [TemplateNode]?, line: Int)
    case rangeNode(Pipeline, body: [TemplateNode], otherwise: [TemplateNode]?, line: Int)
    case withNode(Pipeline, body: [TemplateNode], otherwise: [TemplateNode]?, line: Int)
    case template(name: String, Pipeline?, line: Int)
    case breakNode
    case continueNode
}

/// `$x := cmd arg | cmd`: what is declared or assigned, and the commands.
struct Pipeline: Sendable {
    var variables: [String] = []
    var isAssignment = false
    var commands: [[Operand]] = []
    /// The source text, for error messages (`at <.State.Foo>`).
    var text = ""
}

/// One word of a command.
indirect enum Operand: Sendable {
    /// `.A.B` (empty: the dot itself).
    case field([String])
    /// `$x.A.B` (`$` alone is the root).
    case variable(String, [String])
    /// `(pipeline).A.B`.
    case group(Pipeline, [String])
    /// A function's name.
    case identifier(String)
    case literal(TemplateValue)
    case nilLiteral
}

/// Go's text/template grammar: text, `{{actions}}` with trim markers,
/// comments, pipelines, variables and the control structures if, else
/// if, range, with, define, template, block, break and continue.
struct TemplateParser {
    private let source: [Character]
    private var position = 0
    private var line = 1
    private let name: String
    /// Templates defined with `define` or `block`.
    var definitions: [String: [TemplateNode]] = [:]

    init(_ text: String, name: String) {
        source = Array(text)
        self.name = name
    }

    // MARK: Items: text and actions

    private enum Item {
        case text(String)
        case action([Token], line: Int, text: String)
    }

    private enum Token: Equatable {
        case word(String)  // identifiers and keywords
        case field(String)  // ".Name" (or "." alone)
        case variable(String)  // "$x" or "$"
        case string(String)
        case number(String)
        case char(Character)
        case leftParen, rightParen, pipe, declare, assign, comma
        /// Spaces between words: `.A .B` is two arguments, `.A.B` one field chain.
        case space
    }

    private func error(_ message: String, line: Int? = nil) -> TemplateError {
        TemplateError("template: \(name):\(line ?? self.line): \(message)")
    }

    /// Splits the source into text and the tokens of each action.
    private mutating func items() throws -> [Item] {
        var items: [Item] = []
        var text = ""
        var trimNext = false
        while position < source.count {
            if source[position] == "{", position + 1 < source.count, source[position + 1] == "{" {
                position += 2
                var trimBefore = false
                if position + 1 < source.count, source[position] == "-", source[position + 1].isWhitespace {
                    trimBefore = true
                    position += 1
                }
                if trimBefore { while let last = text.last, last.isWhitespace { text.removeLast() } }
                if trimNext { text = String(text.drop(while: \.isWhitespace)) }
                if !text.isEmpty { items.append(.text(text)) }
                text = ""
                let start = line
                let (tokens, raw, trimAfter) = try action()
                if let tokens { items.append(.action(tokens, line: start, text: raw)) }
                trimNext = trimAfter
            } else {
                if source[position] == "\n" { line += 1 }
                text.append(source[position])
                position += 1
            }
        }
        if trimNext { text = String(text.drop(while: \.isWhitespace)) }
        if !text.isEmpty { items.append(.text(text)) }
        return items
    }

    /// Reads one action after its `{{`: its tokens (nil for a comment),
    /// its text, and whether it ends with ` -}}`.
    private mutating func action() throws -> ([Token]?, String, Bool) {
        let start = position
        // A comment: {{/* … */}}, with optional trim markers.
        var probe = position
        while probe < source.count, source[probe].isWhitespace { probe += 1 }
        if probe + 1 < source.count, source[probe] == "/", source[probe + 1] == "*" {
            position = probe + 2
            while position + 1 < source.count, !(source[position] == "*" && source[position + 1] == "/") {
                if source[position] == "\n" { line += 1 }
                position += 1
            }
            guard position + 1 < source.count else { throw error("unclosed comment") }
            position += 2
            var trim = false
            while position < source.count, source[position].isWhitespace { position += 1 }
            if position < source.count, source[position] == "-" {
                trim = true
                position += 1
            }
            guard position + 1 < source.count, source[position] == "}", source[position + 1] == "}" else {
                throw error("comment ends before closing delimiter")
            }
            position += 2
            return (nil, "", trim)
        }
        var tokens: [Token] = []
        while true {
            guard position < source.count else { throw error("unclosed action") }
            let c = source[position]
            if c == "}" && position + 1 < source.count && source[position + 1] == "}" {
                let raw = String(source[start..<position]).trimmingWhitespace
                position += 2
                return (Self.trimmed(tokens[...]).map { $0 }, raw, false)
            }
            if c.isWhitespace {
                // " -}}" closes with a trim marker.
                if position + 3 < source.count, source[position + 1] == "-", source[position + 2] == "}", source[position + 3] == "}" {
                    let raw = String(source[start..<position]).trimmingWhitespace
                    position += 4
                    return (Self.trimmed(tokens[...]).map { $0 }, raw, true)
                }
                if c == "\n" { line += 1 }
                position += 1
                if tokens.last != .space { tokens.append(.space) }
                continue
            }
            switch c {
            case "(": tokens.append(.leftParen); position += 1
            case ")": tokens.append(.rightParen); position += 1
            case "|": tokens.append(.pipe); position += 1
            case ",": tokens.append(.comma); position += 1
            case "=": tokens.append(.assign); position += 1
            case ":":
                guard position + 1 < source.count, source[position + 1] == "=" else { throw error("expected :=") }
                tokens.append(.declare)
                position += 2
            case "\"": tokens.append(.string(try quoted()))
            case "`":
                position += 1
                var text = ""
                while position < source.count, source[position] != "`" {
                    if source[position] == "\n" { line += 1 }
                    text.append(source[position])
                    position += 1
                }
                guard position < source.count else { throw error("unterminated raw quoted string") }
                position += 1
                tokens.append(.string(text))
            case "'":
                position += 1
                guard position + 1 < source.count else { throw error("unterminated character constant") }
                var ch = source[position]
                if ch == "\\" {
                    position += 1
                    ch = Self.escaped(source[position]) ?? source[position]
                }
                position += 1
                guard position < source.count, source[position] == "'" else { throw error("unterminated character constant") }
                position += 1
                tokens.append(.char(ch))
            case ".":
                if position + 1 < source.count, source[position + 1].isNumber {
                    tokens.append(.number(number()))
                } else {
                    position += 1
                    tokens.append(.field("." + identifier()))
                }
            case "$":
                position += 1
                tokens.append(.variable("$" + identifier()))
            default:
                if c.isNumber || ((c == "-" || c == "+") && position + 1 < source.count && source[position + 1].isNumber) {
                    tokens.append(.number(number()))
                } else if c.isLetter || c == "_" {
                    tokens.append(.word(identifier()))
                } else {
                    throw error("unexpected \"\(c)\" in command")
                }
            }
        }
    }

    /// Tokens without the spaces at either end.
    private static func trimmed(_ tokens: ArraySlice<Token>) -> ArraySlice<Token> {
        var t = tokens
        while t.first == .space { t = t.dropFirst() }
        while t.last == .space { t = t.dropLast() }
        return t
    }

    private mutating func identifier() -> String {
        var text = ""
        while position < source.count, source[position].isLetter || source[position].isNumber || source[position] == "_" {
            text.append(source[position])
            position += 1
        }
        return text
    }

    private mutating func number() -> String {
        var text = ""
        while position < source.count, source[position].isLetter || source[position].isNumber || "._+-".contains(source[position]) {
            // A sign only at the start or after an exponent marker.
            if "+-".contains(source[position]), !(text.isEmpty || text.last == "e" || text.last == "E") { break }
            text.append(source[position])
            position += 1
        }
        return text
    }

    private static func escaped(_ c: Character) -> Character? {
        switch c {
        case "n": return "\n"
        case "t": return "\t"
        case "r": return "\r"
        case "\\": return "\\"
        case "\"": return "\""
        case "'": return "'"
        case "0": return "\0"
        default: return nil
        }
    }

    private mutating func quoted() throws -> String {
        position += 1
        var text = ""
        while position < source.count, source[position] != "\"" {
            if source[position] == "\n" { throw error("unterminated quoted string") }
            if source[position] == "\\" {
                position += 1
                guard position < source.count else { break }
                guard let c = Self.escaped(source[position]) else { throw error("invalid syntax: bad escape \\\(source[position])") }
                text.append(c)
            } else {
                text.append(source[position])
            }
            position += 1
        }
        guard position < source.count else { throw error("unterminated quoted string") }
        position += 1
        return text
    }

    // MARK: The tree

    /// Parses the whole template.
    mutating func parse() throws -> [TemplateNode] {
        let items = try items()
        var index = 0
        let (nodes, end) = try list(items, &index, inside: nil)
        if let end { throw error("unexpected {{\(end)}}") }
        return nodes
    }

    /// Nodes up to `{{end}}` or `{{else…}}` (returned), or the end.
    private mutating func list(_ items: [Item], _ index: inout Int, inside: String?) throws -> ([TemplateNode], String?) {
        var nodes: [TemplateNode] = []
        while index < items.count {
            let item = items[index]
            index += 1
            switch item {
            case .text(let text): nodes.append(.text(text))
            case .action(let tokens, let line, let text):
                guard case .word(let keyword)? = tokens.first else {
                    guard !tokens.isEmpty else { throw error("missing value for command", line: line) }
                    nodes.append(.action(try pipeline(tokens[...], text: text, line: line), line: line))
                    continue
                }
                let rest = Self.trimmed(tokens.dropFirst())
                let restText = String(text.dropFirst(keyword.count)).trimmingWhitespace
                switch keyword {
                case "end":
                    guard inside != nil else { throw error("unexpected {{end}}", line: line) }
                    return (nodes, "end")
                case "else":
                    guard inside != nil else { throw error("unexpected {{else}}", line: line) }
                    if case .word(let next)? = rest.first, next == "if" || next == "with" {
                        // {{else if …}}: the rest is a nested if ending at the same {{end}}.
                        let nested = try control(next, Self.trimmed(rest.dropFirst()), text: String(restText.dropFirst(next.count)).trimmingWhitespace, items, &index, line: line)
                        nodes.append(nested)
                        return (nodes, "else-chain")
                    }
                    return (nodes, "else")
                case "if", "range", "with":
                    nodes.append(try control(keyword, rest, text: restText, items, &index, line: line))
                case "define", "block":
                    guard case .string(let defined)? = rest.first else { throw error("\(keyword) needs a quoted name", line: line) }
                    let (body, end) = try list(items, &index, inside: keyword)
                    guard end == "end" else { throw error("unexpected EOF", line: line) }
                    definitions[defined] = body
                    if keyword == "block" {
                        let argument = Self.trimmed(rest.dropFirst()).isEmpty ? nil : try pipeline(rest.dropFirst(), text: restText, line: line)
                        nodes.append(.template(name: defined, argument, line: line))
                    }
                case "template":
                    guard case .string(let called)? = rest.first else { throw error("template needs a quoted name", line: line) }
                    let argument = Self.trimmed(rest.dropFirst()).isEmpty ? nil : try pipeline(rest.dropFirst(), text: restText, line: line)
                    nodes.append(.template(name: called, argument, line: line))
                case "break", "continue":
                    nodes.append(keyword == "break" ? .breakNode : .continueNode)
                default:
                    nodes.append(.action(try pipeline(tokens[...], text: text, line: line), line: line))
                }
            }
        }
        if let inside { throw error("unexpected EOF in \(inside)") }
        return (nodes, nil)
    }

    /// `if`, `range` or `with` with its body, `else` part and `end`.
    private mutating func control(_ keyword: String, _ tokens: ArraySlice<Token>, text: String, _ items: [Item], _ index: inout Int, line: Int) throws -> TemplateNode {
        guard !tokens.isEmpty else { throw error("missing value for \(keyword)", line: line) }
        let condition = try pipeline(tokens, text: text, line: line)
        let (body, end) = try list(items, &index, inside: keyword)
        var otherwise: [TemplateNode]?
        switch end {
        case "end": break
        case "else":
            let (elseBody, elseEnd) = try list(items, &index, inside: keyword)
            guard elseEnd == "end" else { throw error("expected end; found {{else}}", line: line) }
            otherwise = elseBody
        case "else-chain":
            // The nested `else if` consumed the shared {{end}}: its node is the last of `body`.
            var nodes = body
            let nested = nodes.removeLast()
            switch keyword {
            case "if": return .ifNode(condition, then: nodes, otherwise: [nested], line: line)
            case "range": return .rangeNode(condition, body: nodes, otherwise: [nested], line: line)
            default: return .withNode(condition, body: nodes, otherwise: [nested], line: line)
            }
        default: throw error("unexpected EOF", line: line)
        }
        switch keyword {
        case "if": return .ifNode(condition, then: body, otherwise: otherwise, line: line)
        case "range": return .rangeNode(condition, body: body, otherwise: otherwise, line: line)
        default: return .withNode(condition, body: body, otherwise: otherwise, line: line)
        }
    }

    /// A pipeline: declarations, then commands separated by `|`.
    private func pipeline(_ tokens: ArraySlice<Token>, text: String, line: Int) throws -> Pipeline {
        var result = Pipeline(text: text)
        var tokens = tokens
        func skipSpaces(_ t: inout ArraySlice<Token>) { while t.first == .space { t = t.dropFirst() } }
        skipSpaces(&tokens)
        // $x := …, $i, $e := …, $x = …
        var probe = tokens
        var names: [String] = []
        while case .variable(let name)? = probe.first {
            names.append(name)
            probe = probe.dropFirst()
            skipSpaces(&probe)
            if probe.first == .comma {
                probe = probe.dropFirst()
                skipSpaces(&probe)
                continue
            }
            break
        }
        if !names.isEmpty, let marker = probe.first, marker == .declare || marker == .assign {
            guard names.count <= 2 else { throw error("too many declarations in command", line: line) }
            result.variables = names
            result.isAssignment = marker == .assign
            tokens = probe.dropFirst()
        }
        var command: [Operand] = []
        while let token = tokens.first {
            tokens = tokens.dropFirst()
            switch token {
            case .space: continue
            case .pipe:
                guard !command.isEmpty else { throw error("missing command", line: line) }
                result.commands.append(command)
                command = []
            case .rightParen: throw error("unexpected right paren", line: line)
            default:
                command.append(try operand(token, &tokens, line: line))
            }
        }
        guard !command.isEmpty else { throw error("missing value for command", line: line) }
        result.commands.append(command)
        return result
    }

    /// One operand, with any fields chained after it.
    private func operand(_ token: Token, _ tokens: inout ArraySlice<Token>, line: Int) throws -> Operand {
        func chain() -> [String] {
            var fields: [String] = []
            while case .field(let f)? = tokens.first, f != "." {
                fields.append(String(f.dropFirst()))
                tokens = tokens.dropFirst()
            }
            return fields
        }
        switch token {
        case .field(let f):
            let first = f == "." ? [] : [String(f.dropFirst())]
            return .field(first + chain())
        case .variable(let v): return .variable(v, chain())
        case .leftParen:
            var depth = 1
            var inner: ArraySlice<Token> = []
            var collected: [Token] = []
            while let t = tokens.first {
                tokens = tokens.dropFirst()
                if t == .leftParen { depth += 1 }
                if t == .rightParen {
                    depth -= 1
                    if depth == 0 { break }
                }
                collected.append(t)
            }
            guard depth == 0 else { throw error("unclosed left paren", line: line) }
            inner = collected[...]
            return .group(try pipeline(inner, text: "", line: line), chain())
        case .string(let s): return .literal(.string(s))
        case .char(let c): return .literal(.int(Int64(c.unicodeScalars.first!.value)))
        case .number(let n):
            if let i = Self.integer(n) { return .literal(.int(i)) }
            if let d = Double(n) { return .literal(.double(d)) }
            throw error("bad number syntax: \"\(n)\"", line: line)
        case .word("true"): return .literal(.bool(true))
        case .word("false"): return .literal(.bool(false))
        case .word("nil"): return .nilLiteral
        case .word(let w): return .identifier(w)
        case .declare, .assign, .comma: throw error("unexpected \":=\" in operand", line: line)
        case .space: throw error("unexpected space in operand", line: line)
        case .pipe, .rightParen: throw error("unexpected token in operand", line: line)
        }
    }

    private static func integer(_ text: String) -> Int64? {
        var t = Substring(text.replacingUnderscores)
        var negative = false
        if t.hasPrefix("-") || t.hasPrefix("+") {
            negative = t.hasPrefix("-")
            t = t.dropFirst()
        }
        let value: Int64?
        if t.hasPrefix("0x") || t.hasPrefix("0X") {
            value = Int64(t.dropFirst(2), radix: 16)
        } else if t.hasPrefix("0o") || t.hasPrefix("0O") {
            value = Int64(t.dropFirst(2), radix: 8)
        } else if t.hasPrefix("0b") || t.hasPrefix("0B") {
            value = Int64(t.dropFirst(2), radix: 2)
        } else if t.count > 1, t.hasPrefix("0") {
            value = Int64(t.dropFirst(), radix: 8)
        } else {
            value = Int64(t)
        }
        return value.map { negative ? -$0 : $0 }
    }
}

extension String {
    var trimmingWhitespace: String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }

    fileprivate var replacingUnderscores: String { filter { $0 != "_" } }
}
