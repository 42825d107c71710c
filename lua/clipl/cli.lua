--- Helpers for subcommand scripts (scripts/NAME.lua, run as `clipl NAME args...`): an argument
-- parser that gives every command the same --help and the same error format.
--
--   local cli = require "clipl.cli"
--   local args = cli.parser {
--       name = "zeroshot",
--       description = "Zero-shot classification of images with a CLIP model",
--       options = {
--           {"-m", "--model", arg = "NAME", default = "ViT-B/32", help = "model name or file"},
--           {"-k", "--top", arg = "N", type = "number", default = 5, help = "labels to show"},
--           {"-l", "--label", arg = "TEXT", multi = true, help = "a class label (repeatable)"},
--           {"--json", help = "print JSON lines"},
--       },
--       positional = {{"images", nargs = "+", help = "image files"}},
--   }:parse(arg)
--   -- args.model, args.top, args.label (a list), args.json (true/false), args.images (a list)
local M = {}

local Parser = {}
Parser.__index = Parser

local function key_of(opt)
    local long
    for _, s in ipairs(opt) do
        if s:sub(1, 2) == "--" then
            long = s
        end
    end
    local name = opt.key or (long and long:sub(3)) or opt[1]:sub(2)
    return (name:gsub("-", "_"))
end

--- A parser from a spec: name, description, options (each {"-s", "--long", arg = "META",
-- type = "number"|"integer"|"string", default = v, multi = bool, required = bool, choices = {...},
-- help = text}; an option without `arg` is a flag), positional (each {"name", type, default, help,
-- nargs = 1|N|"?"|"*"|"+"}), epilog. -h/--help is always there.
function M.parser(spec)
    assert(type(spec) == "table" and spec.name, "cli.parser: spec.name is required")
    local p = setmetatable({spec = spec, by_flag = {}, options = {}, positional = {}}, Parser)
    for _, opt in ipairs(spec.options or {}) do
        local o = {flags = {}, key = key_of(opt), arg = opt.arg, type = opt.type or "string",
            default = opt.default, multi = opt.multi, required = opt.required,
            choices = opt.choices, help = opt.help or ""}
        for _, s in ipairs(opt) do
            o.flags[#o.flags + 1] = s
            assert(not p.by_flag[s], "cli.parser: option " .. s .. " given twice")
            p.by_flag[s] = o
        end
        p.options[#p.options + 1] = o
    end
    for _, pos in ipairs(spec.positional or {}) do
        p.positional[#p.positional + 1] = {key = pos[1], nargs = pos.nargs or 1,
            type = pos.type or "string", default = pos.default, help = pos.help or ""}
    end
    return p
end

local function prog(spec)
    return "clipl " .. spec.name
end

--- The one-line usage.
function Parser:usage()
    if self.spec.usage then
        return "usage: " .. prog(self.spec) .. " " .. self.spec.usage
    end
    local parts = {"usage: " .. prog(self.spec), "[options]"}
    for _, pos in ipairs(self.positional) do
        local m = pos.key:upper()
        if pos.nargs == "?" then
            m = "[" .. m .. "]"
        elseif pos.nargs == "*" then
            m = "[" .. m .. "...]"
        elseif pos.nargs == "+" then
            m = m .. "..."
        elseif type(pos.nargs) == "number" and pos.nargs > 1 then
            m = string.rep(m, pos.nargs, " ")
        end
        parts[#parts + 1] = m
    end
    return table.concat(parts, " ")
end

--- The full help text (what --help prints).
function Parser:help()
    local out = {self:usage()}
    if self.spec.description then
        out[#out + 1] = ""
        out[#out + 1] = self.spec.description
    end
    if #self.positional > 0 then
        out[#out + 1] = ""
        out[#out + 1] = "arguments:"
        for _, pos in ipairs(self.positional) do
            out[#out + 1] = string.format("  %-24s %s", pos.key:upper(), pos.help)
        end
    end
    out[#out + 1] = ""
    out[#out + 1] = "options:"
    local rows = {{"-h, --help", "show this help and exit"}}
    for _, o in ipairs(self.options) do
        local left = table.concat(o.flags, ", ") .. (o.arg and (" " .. o.arg) or "")
        local right = o.help
        if o.choices then
            right = right .. " (one of: " .. table.concat(o.choices, ", ") .. ")"
        end
        if o.default ~= nil then
            right = right .. " (default: " .. tostring(o.default) .. ")"
        end
        if o.multi then
            right = right .. " (repeatable)"
        end
        rows[#rows + 1] = {left, right}
    end
    for _, r in ipairs(rows) do
        local line = string.format("  %-24s %s", r[1], r[2])
        if #r[1] > 24 then
            line = "  " .. r[1] .. "\n  " .. string.rep(" ", 25) .. r[2]
        end
        out[#out + 1] = line
    end
    if self.spec.epilog then
        out[#out + 1] = ""
        out[#out + 1] = self.spec.epilog
    end
    return table.concat(out, "\n")
end

local function convert(value, typ, what)
    if typ == "number" then
        local n = tonumber(value)
        if n == nil then
            return nil, what .. ": expected a number, got '" .. value .. "'"
        end
        return n
    elseif typ == "integer" then
        local n = tonumber(value)
        if n == nil or n % 1 ~= 0 then
            return nil, what .. ": expected an integer, got '" .. value .. "'"
        end
        return n
    end
    return value
end

--- Parses a list of words (an `arg` table: arg[1..]). Returns the args table, or nil and an error
-- message, or nil and "help" when -h/--help was given. Never exits.
function Parser:parse_args(argv)
    local args, words, i = {}, {}, 1
    for _, o in ipairs(self.options) do
        if o.multi then
            args[o.key] = {}
        elseif o.arg == nil then
            args[o.key] = false
        end
    end
    local function set(o, flag, value)
        if o.arg == nil then
            if value ~= nil then
                return "option " .. flag .. " takes no value"
            end
            args[o.key] = true
            return nil
        end
        local v, err = convert(value, o.type, "option " .. flag)
        if err then
            return err
        end
        if o.choices then
            local ok = false
            for _, c in ipairs(o.choices) do
                ok = ok or tostring(c) == v
            end
            if not ok then
                return "option " .. flag .. ": '" .. v .. "' is not one of " ..
                    table.concat(o.choices, ", ")
            end
        end
        if o.multi then
            table.insert(args[o.key], v)
        else
            args[o.key] = v
        end
        return nil
    end
    local n = #argv
    local only_words = false
    while i <= n do
        local w = argv[i]
        if only_words or w == "-" or w:sub(1, 1) ~= "-" or tonumber(w) then
            words[#words + 1] = w
        elseif w == "--" then
            only_words = true
        elseif w == "-h" or w == "--help" then
            return nil, "help"
        else
            local flag, value = w:match("^(%-%-[^=]+)=(.*)$")
            if not flag then
                flag = w
                if w:sub(2, 2) ~= "-" and #w > 2 and self.by_flag[w:sub(1, 2)] then
                    flag, value = w:sub(1, 2), w:sub(3) -- -k5
                end
            end
            local o = self.by_flag[flag]
            if not o then
                return nil, "unknown option " .. flag
            end
            if o.arg ~= nil and value == nil then
                i = i + 1
                value = argv[i]
                if value == nil then
                    return nil, "option " .. flag .. " needs a value (" .. o.arg .. ")"
                end
            end
            local err = set(o, flag, value)
            if err then
                return nil, err
            end
        end
        i = i + 1
    end
    for _, o in ipairs(self.options) do
        if args[o.key] == nil or (o.multi and #args[o.key] == 0 and o.default ~= nil) then
            if o.required then
                return nil, "option " .. o.flags[#o.flags] .. " is required"
            end
            args[o.key] = o.default
        end
    end
    -- positionals: fixed counts first, a "*"/"+" takes what is left
    local wi = 1
    for pi, pos in ipairs(self.positional) do
        local what = "argument " .. pos.key:upper()
        if pos.nargs == "*" or pos.nargs == "+" then
            local rest = 0
            for j = pi + 1, #self.positional do
                local nj = self.positional[j].nargs
                rest = rest + (type(nj) == "number" and nj or 0)
            end
            local list = {}
            while wi <= #words - rest do
                local v, err = convert(words[wi], pos.type, what)
                if err then return nil, err end
                list[#list + 1] = v
                wi = wi + 1
            end
            if pos.nargs == "+" and #list == 0 then
                return nil, "missing " .. what
            end
            args[pos.key] = list
        elseif pos.nargs == "?" then
            if words[wi] ~= nil then
                local v, err = convert(words[wi], pos.type, what)
                if err then return nil, err end
                args[pos.key] = v
                wi = wi + 1
            else
                args[pos.key] = pos.default
            end
        else
            local count = pos.nargs
            local list = {}
            for _ = 1, count do
                if words[wi] == nil then
                    return nil, "missing " .. what
                end
                local v, err = convert(words[wi], pos.type, what)
                if err then return nil, err end
                list[#list + 1] = v
                wi = wi + 1
            end
            args[pos.key] = count == 1 and list[1] or list
        end
    end
    if wi <= #words then
        return nil, "unexpected argument '" .. words[wi] .. "'"
    end
    return args
end

--- Parses `arg` (the script's argument table); prints the help and exits 0 on --help, prints
-- `clipl NAME: error` with the usage and exits 2 on bad arguments.
function Parser:parse(argv)
    local args, err = self:parse_args(argv or _G.arg or {})
    if args then
        return args
    end
    if err == "help" then
        io.stdout:write(self:help(), "\n")
        os.exit(0)
    end
    io.stderr:write(prog(self.spec), ": ", err, "\n", self:usage(), "\n",
        "(", prog(self.spec), " --help for more)\n")
    os.exit(2)
end

--- Prints `clipl NAME: message` to stderr and exits with code (default 1): for errors a user can
-- fix (a missing file, a bad model name), where a traceback would only be noise.
function M.die(name, message, code)
    io.stderr:write("clipl ", name, ": ", message, "\n")
    os.exit(code or 1)
end

return M
