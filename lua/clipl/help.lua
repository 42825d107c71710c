--- Help texts of the API: `clip.help(fn_or_name)` prints the doc comment of a function (the `---`
-- lines above its definition in the source, with its signature), `?name` in the REPL does the same.
-- Names: "tensor", "clip.load", "t:softmax", "Tensor.view", "clip.image.load", or a function value.
-- Modules can add texts for what has no Lua source (C functions, aliases) with help.register.
local M = {}
local internal = {}

local registered = {} -- function or name -> text

--- Adds or replaces the help text of a function (a value or a name).
function internal.register(fn_or_name, text)
    registered[fn_or_name] = text
end

local function api()
    local ok, clip = pcall(require, "clipl")
    if ok and type(clip) == "table" then
        return clip
    end
    return nil
end

local function tensor_methods()
    local ok, tensor = pcall(require, "clipl.tensor")
    return ok and tensor.Tensor or {}
end

local function lookup(v, k)
    local ok, r = pcall(function() return v[k] end)
    return ok and r or nil
end

local function walk(root, path)
    local v = root
    for name in path:gmatch("[^%.]+") do
        if type(v) ~= "table" then
            return nil
        end
        v = lookup(v, name)
        if v == nil then
            return nil
        end
    end
    return v
end

--- Resolves a name to (value, display name) or nil.
local function resolve(name)
    name = name:gsub("^%s+", ""):gsub("%s*%(?%)?%s*$", "")
    local clip = api() or {}
    local method = name:match("^[%a_][%w_]*:([%a_][%w_]*)$")
        or name:match("^Tensor%.([%a_][%w_]*)$") or name:match("^:([%a_][%w_]*)$")
    if method then
        local fn = tensor_methods()[method]
        if fn ~= nil then
            return fn, "t:" .. method
        end
        return nil
    end
    local path = name:gsub("^clip%.", ""):gsub("^clipl%.", "")
    local v = walk(clip, path)
    if v ~= nil then
        return v, "clip." .. path
    end
    v = tensor_methods()[path]
    if v ~= nil then
        return v, "t:" .. path
    end
    v = walk(_G, name)
    if v ~= nil then
        return v, name
    end
    return nil
end

--- Finds a display name for a function value: clip.X, clip.mod.X or t:X.
local function name_of(fn)
    for k, v in pairs(tensor_methods()) do
        if v == fn then
            return "t:" .. k
        end
    end
    local clip = api() or {}
    local best
    for k, v in pairs(clip) do
        if v == fn and type(k) == "string" and (not best or #k < #best) then
            best = "clip." .. k
        end
    end
    if best then
        return best
    end
    for k, v in pairs(clip) do
        if type(v) == "table" and type(k) == "string" and k ~= "lib" then
            for k2, v2 in pairs(v) do
                if v2 == fn and type(k2) == "string" then
                    return "clip." .. k .. "." .. k2
                end
            end
        end
    end
    return nil
end

local file_cache = {}
local function source_lines(path)
    local lines = file_cache[path]
    if lines == nil then
        lines = false
        local f = io.open(path, "r")
        if f then
            lines = {}
            for l in f:lines() do
                lines[#lines + 1] = l
            end
            f:close()
        end
        file_cache[path] = lines
    end
    return lines or nil
end

--- The doc comment of a Lua function from its source file, or nil (a C function, no source):
-- {lines = the comment's lines, sig = "(a, b)" or nil, method = defined with ':',
-- file = "clipl/models.lua", line = where it is defined}. scripts/gen_api_docs.lua uses it too.
function internal.source_doc(fn)
    local info = debug.getinfo(fn, "S")
    if not info or info.what ~= "Lua" or info.source:sub(1, 1) ~= "@" then
        return nil
    end
    local path = info.source:sub(2)
    local lines = source_lines(path)
    local at = info.linedefined
    if not lines or not lines[at] then
        return nil
    end
    local doc = {}
    local i = at - 1
    while i >= 1 and lines[i]:match("^%s*%-%-") and not lines[i]:match("^%s*%-%- ?%-%-%-%-") do
        table.insert(doc, 1, (lines[i]:gsub("^%s*%-%-%-?%s?", "")))
        i = i - 1
    end
    local name, sig = lines[at]:match("function%s*([%w_%.:]*)%s*(%b())")
    return {lines = doc, sig = sig, method = (name or ""):find(":", 1, true) ~= nil,
        file = path:match("[^/]*/[^/]*$") or path, line = at}
end

local function signature(display, _, sig)
    if not sig then
        return display
    end
    if display:sub(1, 2) == "t:" then
        -- drop the tensor argument: function Tensor.view(t, ...) -> t:view(...)
        sig = sig:gsub("^%(%s*[%w_]+%s*,?%s*", "(")
    end
    return display .. sig
end

local function one_line(fn)
    if registered[fn] then
        return (registered[fn]:match("[^\n]*"))
    end
    local d = type(fn) == "function" and internal.source_doc(fn)
    if d and d.lines[1] then
        return d.lines[1]
    end
    return ""
end

local function list_table(title, t, prefix)
    local names = {}
    for k in pairs(t) do
        if type(k) == "string" and k:sub(1, 1) ~= "_" then
            names[#names + 1] = k
        end
    end
    table.sort(names)
    local out = {title}
    for _, k in ipairs(names) do
        local v = t[k]
        local line = one_line(v)
        if type(v) == "table" then
            line = "(table: ?" .. prefix .. k .. " lists it)"
        elseif type(v) ~= "function" then
            line = "= " .. tostring(v)
        end
        local left = string.format("  %-24s ", prefix .. k)
        local room = math.max(20, 99 - #left)
        if #line > room then
            line = line:sub(1, room - 3) .. "..."
        end
        out[#out + 1] = (left .. line):gsub("%s+$", "")
    end
    return table.concat(out, "\n")
end

--- The help text of a function (a value or a name), of a module table, or the overview (nil).
function internal.text(x)
    if x == nil then
        local clip = api() or {}
        return "clipl " .. tostring(clip.version) ..
            ": CLIP on oneDNN, scriptable from LuaJIT.\n" ..
            "clip.help(name) or ?name in the REPL shows one function: ?tensor, ?t:softmax, " ..
            "?clip.load\n\n" .. list_table("Functions and modules of clip:", clip, "clip.") ..
            "\n\n" .. list_table("Tensor methods (t:name(...)):", tensor_methods(), "t:")
    end
    local value, display = x
    if type(x) == "string" then
        if registered[x] then
            return x .. "\n" .. registered[x]
        end
        value, display = resolve(x)
        if value == nil then
            return "no help for '" .. x .. "': not a function of clip, a tensor method or a global"
        end
    else
        display = name_of(x) or tostring(x)
    end
    if registered[value] then
        return display .. "\n" .. registered[value]
    end
    if type(value) == "table" then
        return list_table(display .. " (module):", value, display .. ".")
    end
    if type(value) ~= "function" then
        return display .. " = " .. tostring(value) .. " (" .. type(value) .. ", not a function)"
    end
    local d = internal.source_doc(value)
    if d == nil then
        return display .. ": a builtin (C) function; see the LuaJIT / Lua 5.1 manual"
    end
    local doc = #d.lines > 0 and table.concat(d.lines, "\n") or "(no doc comment)"
    return signature(display, value, d.sig) .. "\n" .. doc .. "\n(" .. d.file .. ":" .. d.line ..
        ")"
end

--- Prints the help of a function of clip, a tensor method or a module: clip.help(clip.load),
-- clip.help "t:softmax", clip.help() for the overview.
function M.help(fn_or_name)
    print(internal.text(fn_or_name))
end

return setmetatable(M, {__index = internal})
