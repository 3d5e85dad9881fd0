/// A Go `text/template`, as docker's `--format` takes it: parsed once, run
/// on values shaped as Go's (`TemplateValue`), with Go's built-in
/// functions and docker's (`json`, `split`, `join`, `title`, `lower`,
/// `upper`, `pad`, `truncate`).
public struct Template: Sendable {
    /// What a field that a struct does not have yields.
    public enum MissingField: Sendable {
        /// An error, as Go's for a struct (`can't evaluate field X in type T`).
        case error
        /// An error in the words of Go's for a map with `missingkey=error`
        /// (`map has no entry for key "X"`): what `docker inspect` says,
        /// which reruns a failed template on the raw JSON that way.
        case mapError
    }

    let nodes: [TemplateNode]
    let definitions: [String: [TemplateNode]]
    let name: String
    var functions: [String: TemplateFunction]

    /// Parses `text`.
    ///
    /// - Throws: `TemplateError` saying where the template is malformed,
    ///   or naming a function it calls that does not exist.
    public init(_ text: String, name: String = "", functions: [String: TemplateFunction] = TemplateFunctions.docker) throws {
        var parser = TemplateParser(text, name: name)
        nodes = try parser.parse()
        definitions = parser.definitions
        self.name = name
        self.functions = functions
        try checkFunctions(nodes)
        for body in definitions.values { try checkFunctions(body) }
    }

    /// The text the template makes of `data`.
    ///
    /// - Throws: `TemplateError` for what Go's would refuse at run time: a
    ///   field the data lacks (with `.error`), a call with the wrong
    ///   arguments, an index out of range.
    public func execute(_ data: TemplateValue, missingField: MissingField = .error) throws -> String {
        var executor = TemplateExecutor(template: self, missingField: missingField, root: data)
        _ = try executor.run(nodes, dot: data)
        return executor.output
    }

    /// The same template with other functions under the same names (docker's
    /// headers run the template with functions that pass their value through).
    public func with(functions replacing: [String: TemplateFunction]) -> Template {
        var copy = self
        copy.functions.merge(replacing) { $1 }
        return copy
    }

    /// Go refuses at parse time a function it does not know.
    private func checkFunctions(_ nodes: [TemplateNode]) throws {
        func check(_ pipeline: Pipeline?, _ line: Int) throws {
            guard let pipeline else { return }
            for command in pipeline.commands {
                for operand in command {
                    switch operand {
                    case .identifier(let name) where functions[name] == nil && !TemplateExecutor.special.contains(name):
                        throw TemplateError("template: \(self.name):\(line): function \"\(name)\" not defined")
                    case .group(let inner, _): try check(inner, line)
                    default: break
                    }
                }
            }
        }
        for node in nodes {
            switch node {
            case .action(let p, let line): try check(p, line)
            case .ifNode(let p, let a, let b, let line), .rangeNode(let p, let a, let b, let line), .withNode(let p, let a, let b, let line):
                try check(p, line)
                try checkFunctions(a)
                try checkFunctions(b ?? [])
            case .template(_, let p, let line): try check(p, line)
            case .text, .breakNode, .continueNode: break
            }
        }
    }
}

/// Runs a parsed template: the dot, the variables in scope, the output.
struct TemplateExecutor {
    /// Functions the executor evaluates itself (their arguments lazily).
    static let special: Set<String> = ["and", "or"]

    let template: Template
    let missingField: Template.MissingField
    var variables: [(String, TemplateValue)]
    var output = ""
    var depth = 0

    enum Flow { case normal, breakLoop, continueLoop }

    init(template: Template, missingField: Template.MissingField, root: TemplateValue) {
        self.template = template
        self.missingField = missingField
        variables = [("$", root)]
    }

    private func error(_ line: Int, _ at: String, _ message: String) -> TemplateError {
        TemplateError("template: \(template.name):\(line): executing \"\(template.name)\" at <\(at)>: \(message)")
    }

    mutating func run(_ nodes: [TemplateNode], dot: TemplateValue) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let text): output += text
            case .action(let pipeline, let line):
                let value = try evaluate(pipeline, dot: dot, line: line, declare: true)
                if pipeline.variables.isEmpty { output += value.description }
            case .ifNode(let pipeline, let then, let otherwise, let line):
                let mark = variables.count
                defer { variables.removeSubrange(mark...) }
                let condition = try evaluate(pipeline, dot: dot, line: line, declare: true)
                if let body = condition.isTrue ? then : otherwise {
                    let flow = try run(body, dot: dot)
                    if flow != .normal { return flow }
                }
            case .withNode(let pipeline, let body, let otherwise, let line):
                let mark = variables.count
                defer { variables.removeSubrange(mark...) }
                let value = try evaluate(pipeline, dot: dot, line: line, declare: true)
                let flow: Flow
                if value.isTrue {
                    flow = try run(body, dot: value)
                } else if let otherwise {
                    flow = try run(otherwise, dot: dot)
                } else {
                    flow = .normal
                }
                if flow != .normal { return flow }
            case .rangeNode(let pipeline, let body, let otherwise, let line):
                let mark = variables.count
                defer { variables.removeSubrange(mark...) }
                let value = try evaluate(pipeline, dot: dot, line: line, declare: false)
                let items: [(TemplateValue, TemplateValue)]
                switch value {
                case .list(let list): items = list.enumerated().map { (TemplateValue.int(Int64($0.offset)), $0.element) }
                case .map(let map): items = map.keys.sorted().map { (TemplateValue.string($0), map[$0]!) }
                case .int(let n): items = (0..<max(0, n)).map { (TemplateValue.int($0), TemplateValue.int($0)) }
                case .nilList, .nilMap, .noValue, .null, .omitted: items = []
                default: throw error(line, pipeline.text, "range can't iterate over \(value)")
                }
                if items.isEmpty {
                    if let otherwise {
                        let flow = try run(otherwise, dot: dot)
                        if flow != .normal { return flow }
                    }
                    continue
                }
                for (key, element) in items {
                    let scope = variables.count
                    switch pipeline.variables.count {
                    case 1: variables.append((pipeline.variables[0], element))
                    case 2:
                        variables.append((pipeline.variables[0], key))
                        variables.append((pipeline.variables[1], element))
                    default: break
                    }
                    let flow = try run(body, dot: element)
                    variables.removeSubrange(scope...)
                    if flow == .breakLoop { break }
                }
            case .template(let name, let pipeline, let line):
                guard let body = template.definitions[name] else { throw error(line, "template", "no such template \"\(name)\"") }
                let value = try pipeline.map { try evaluate($0, dot: dot, line: line, declare: false) } ?? .null
                depth += 1
                defer { depth -= 1 }
                guard depth < 1000 else { throw error(line, "template", "exceeded maximum template depth (1000)") }
                let saved = variables
                variables = [("$", value)]
                defer { variables = saved }
                _ = try run(body, dot: value)
            case .breakNode: return .breakLoop
            case .continueNode: return .continueLoop
            }
        }
        return .normal
    }

    /// A pipeline's value; its declarations made (or assignments done).
    mutating func evaluate(_ pipeline: Pipeline, dot: TemplateValue, line: Int, declare: Bool) throws -> TemplateValue {
        var value: TemplateValue?
        for command in pipeline.commands {
            value = try evaluate(command, dot: dot, piped: value, line: line)
        }
        let result = value ?? .noValue
        if declare {
            for name in pipeline.variables {
                if pipeline.isAssignment {
                    guard let index = variables.lastIndex(where: { $0.0 == name }) else {
                        throw error(line, name, "undefined variable: \(name)")
                    }
                    variables[index].1 = result
                } else {
                    variables.append((name, result))
                }
            }
        }
        return result
    }

    private func variable(_ name: String, line: Int) throws -> TemplateValue {
        guard let found = variables.last(where: { $0.0 == name }) else { throw error(line, name, "undefined variable: \(name)") }
        return found.1
    }

    /// One command: a function call, a method call, or a value.
    private mutating func evaluate(_ command: [Operand], dot: TemplateValue, piped: TemplateValue?, line: Int) throws -> TemplateValue {
        let arguments = command.dropFirst()
        switch command[0] {
        case .identifier(let name):
            if name == "and" || name == "or" {
                guard !arguments.isEmpty || piped != nil else {
                    throw error(line, name, "wrong number of args for \(name): want at least 1 got 0")
                }
                var last = TemplateValue.noValue
                for argument in arguments {
                    last = try operand(argument, dot: dot, line: line)
                    if (name == "and") != last.isTrue { return last }
                }
                return piped ?? last
            }
            guard let function = template.functions[name] else { throw error(line, name, "function \"\(name)\" not defined") }
            var values = try arguments.map { try operand($0, dot: dot, line: line) }
            if let piped { values.append(piped) }
            do {
                return try function.call(values)
            } catch let failure as TemplateError {
                throw error(line, name, "error calling \(name): \(failure.message)")
            }
        case .field(let fields) where !fields.isEmpty:
            return try call(dot, fields, at: "." + fields.joined(separator: "."), arguments, dot: dot, piped: piped, line: line)
        case .variable(let name, let fields) where !fields.isEmpty:
            return try call(try variable(name, line: line), fields, at: name + "." + fields.joined(separator: "."), arguments, dot: dot, piped: piped, line: line)
        case .group(let inner, let fields) where !fields.isEmpty:
            return try call(try evaluate(inner, dot: dot, line: line, declare: false), fields, at: "(" + inner.text + ")", arguments, dot: dot, piped: piped, line: line)
        default:
            guard arguments.isEmpty, piped == nil else {
                throw error(line, "", "can't give argument to non-function \(try operand(command[0], dot: dot, line: line))")
            }
            return try operand(command[0], dot: dot, line: line)
        }
    }

    /// `receiver.A.B args…`: the chain, its last link called when it is a method.
    private mutating func call(
        _ receiver: TemplateValue, _ fields: [String], at: String, _ arguments: ArraySlice<Operand>, dot: TemplateValue, piped: TemplateValue?, line: Int
    ) throws -> TemplateValue {
        var value = receiver
        for (i, name) in fields.enumerated() {
            let last = i == fields.count - 1
            value = try field(value, name, more: !last, at: at, line: line)
            if case .function(let method) = value {
                var values: [TemplateValue] = []
                if last {
                    values = try arguments.map { try operand($0, dot: dot, line: line) }
                    if let piped { values.append(piped) }
                }
                do {
                    value = try method.call(values)
                } catch let failure as TemplateError {
                    throw error(line, at, "error calling \(name): \(failure.message)")
                }
            } else if last, !arguments.isEmpty || piped != nil {
                throw error(line, at, "\(name) has arguments but cannot be invoked as function")
            }
        }
        return value
    }

    /// A field of a value, as Go's evalField finds it (`more`: other
    /// fields follow in the chain).
    private func field(_ value: TemplateValue, _ name: String, more: Bool, at: String, line: Int) throws -> TemplateValue {
        switch value {
        case .object(let object):
            guard let found = object.field(name) else {
                if missingField == .mapError { throw error(line, at, "map has no entry for key \"\(name)\"") }
                throw error(line, at, "can't evaluate field \(name) in type \(object.typeName)")
            }
            if case .omitted = found, more, missingField == .mapError { throw error(line, at, "map has no entry for key \"\(name)\"") }
            return found
        case .map(let map): return map[name] ?? .noValue
        case .nilMap, .noValue: return .noValue
        case .null, .omitted:
            throw error(line, at, "nil pointer evaluating \(value.typeName).\(name)")
        default:
            throw error(line, at, "can't evaluate field \(name) in type \(value.typeName)")
        }
    }

    /// `value.A.B` as an argument: methods along the way called without arguments.
    private func chain(_ value: TemplateValue, _ fields: [String], at: String, line: Int) throws -> TemplateValue {
        var value = value
        for (i, name) in fields.enumerated() {
            value = try field(value, name, more: i < fields.count - 1, at: at, line: line)
            if case .function(let method) = value { value = try method.call([]) }
        }
        return value
    }

    /// An argument's value.
    private mutating func operand(_ operand: Operand, dot: TemplateValue, line: Int) throws -> TemplateValue {
        switch operand {
        case .field(let fields):
            return try chain(dot, fields, at: "." + fields.joined(separator: "."), line: line)
        case .variable(let name, let fields):
            return try chain(try variable(name, line: line), fields, at: name + "." + fields.joined(separator: "."), line: line)
        case .group(let inner, let fields):
            return try chain(try evaluate(inner, dot: dot, line: line, declare: false), fields, at: "(" + inner.text + ")", line: line)
        case .identifier(let name):
            // A function used as an argument is called without arguments ({{len (list)}} aside).
            return try evaluate([.identifier(name)], dot: dot, piped: nil, line: line)
        case .literal(let value): return value
        case .nilLiteral: return .null
        }
    }
}
