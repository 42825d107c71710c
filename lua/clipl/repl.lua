--- The REPL of the `clipl` launcher: reads chunks (continued over lines until complete), prints the
-- results of expressions, completes names and shows help (`?name`). Line editing, history and
-- Ctrl-C come from the launcher's native table (require "clipl.app", only inside `clipl`);
-- compile, complete and pretty work in any LuaJIT.
local M = {}

local keywords = {
    "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
    "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while",
}

-- ---- compiling ----------------------------------------------------------------------------------

--- True when a compile error only says the chunk ended too early (LuaJIT's luajit.c check: the
-- message ends in '<eof>'), so more lines should be read.
function M.incomplete(err)
    return type(err) == "string" and err:sub(-7) == "'<eof>'"
end

--- Compiles a chunk typed in the REPL. An expression is tried first (`return <src>`) so its values
-- are printed. Returns fn, nil, show (show = the values it returns should be printed: no
-- trailing `;`), or nil, message, false, incomplete.
function M.compile(src, chunkname)
    chunkname = chunkname or "=stdin"
    local body, semi = src:gsub("^%s*=", "return "), src:match(";%s*$") ~= nil
    -- `select(1, expr)` rather than `return expr`: not a tail call, so errors keep their line
    local expr = body:gsub(";%s*$", "")
    local fn = loadstring("return select(1, " .. expr .. "\n)", chunkname)
    if fn then
        return fn, nil, not semi
    end
    local err
    fn, err = loadstring(body, chunkname)
    if fn then
        return fn, nil, not semi -- `return x` shows x; other statements return nothing
    end
    return nil, err, false, M.incomplete(err)
end

-- ---- printing -----------------------------------------------------------------------------------

local function is_tensor(v)
    if type(v) ~= "cdata" then
        return false
    end
    local ok, tensor = pcall(require, "clipl.tensor")
    return ok and tensor.is_tensor(v)
end

local function is_ident(k)
    return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function short(v)
    if is_tensor(v) then
        local sizes = v:size()
        return string.format("%s[%s]", v:type(), #sizes > 0 and table.concat(sizes, "x") or "")
    end
    return tostring(v)
end

--- Formats a value for display: strings quoted, tables with their fields (nested up to depth 2,
-- 40 entries each), tensors printed in full by their own format.
function M.pretty(v, depth, seen)
    depth = depth or 0
    local tv = type(v)
    if tv == "string" then
        return string.format("%q", v)
    elseif tv == "table" then
        local mt = getmetatable(v)
        if mt and rawget(mt, "__tostring") then
            return tostring(v)
        end
        seen = seen or {}
        if seen[v] then
            return "<cycle: " .. tostring(v) .. ">"
        end
        if depth >= 2 then
            return tostring(v)
        end
        seen[v] = true
        local parts, n, count = {}, #v, 0
        for i = 1, n do
            count = count + 1
            if count > 40 then break end
            parts[#parts + 1] = M.pretty(v[i], depth + 1, seen)
        end
        local keys = {}
        for k in pairs(v) do
            if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then
                keys[#keys + 1] = k
            end
        end
        table.sort(keys, function(a, b)
            if type(a) == type(b) and (type(a) == "string" or type(a) == "number") then
                return a < b
            end
            return type(a) < type(b)
        end)
        for _, k in ipairs(keys) do
            count = count + 1
            if count > 40 then break end
            local key = is_ident(k) and k or "[" .. M.pretty(k, 2, seen) .. "]"
            parts[#parts + 1] = key .. " = " .. M.pretty(v[k], depth + 1, seen)
        end
        if count > 40 then
            parts[#parts + 1] = "..."
        end
        seen[v] = nil
        if #parts == 0 then
            return "{}"
        end
        local one = "{" .. table.concat(parts, ", ") .. "}"
        if #one <= 100 and not one:find("\n") then
            return one
        end
        local pad = string.rep("  ", depth + 1)
        return "{\n" .. pad .. table.concat(parts, ",\n" .. pad) .. "\n" ..
            string.rep("  ", depth) .. "}"
    elseif is_tensor(v) then
        if depth > 0 then
            return short(v)
        end
        return tostring(v)
    end
    return tostring(v)
end

--- Formats the n values a chunk returned, one per line (tensors span several lines).
function M.format_results(n, ...)
    local out = {}
    for i = 1, n do
        out[i] = M.pretty((select(i, ...)))
    end
    return table.concat(out, "\n")
end

-- ---- completion ---------------------------------------------------------------------------------

local show_dunder = false -- names like __index are offered only when the word starts with __

local function add_keys(set, t)
    if type(t) ~= "table" then
        return
    end
    for k in pairs(t) do
        if is_ident(k) and (show_dunder or k:sub(1, 2) ~= "__") then
            set[k] = true
        end
    end
end

-- Names reachable from a value: its fields and, through __index tables, its methods; a tensor's
-- methods come from the Tensor table, a string's from `string`.
local function fields_of(v)
    local set = {}
    local tv = type(v)
    if tv == "table" then
        add_keys(set, v)
        local guard, mt = 0, getmetatable(v)
        while type(mt) == "table" and guard < 8 do
            local idx = rawget(mt, "__index")
            if type(idx) ~= "table" then break end
            add_keys(set, idx)
            mt, guard = getmetatable(idx), guard + 1
        end
    elseif tv == "string" then
        add_keys(set, string)
    elseif is_tensor(v) then
        add_keys(set, require("clipl.tensor").Tensor)
    elseif tv == "userdata" or tv == "cdata" then
        local mt = getmetatable(v)
        if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then
            add_keys(set, rawget(mt, "__index"))
        end
    end
    return set
end

local function lookup(v, k)
    local ok, r = pcall(function() return v[k] end)
    if ok then
        return r
    end
    return nil
end

--- Completion candidates for the word before the cursor: `pri` -> print, `clip.ten` ->
-- clip.tensor, `t:so` -> t:softmax. Returns the full words, sorted.
function M.complete(word, env)
    env = env or _G
    local out = {}
    local path, sep, prefix = word:match("^(.-)([%.:])([%w_]*)$")
    show_dunder = (prefix or word):sub(1, 2) == "__"
    if not path then
        if not word:match("^[%a_][%w_]*$") and word ~= "" then
            return out
        end
        local set = fields_of(env)
        for _, k in ipairs(keywords) do
            set[k] = true
        end
        for k in pairs(set) do
            if k:sub(1, #word) == word then
                out[#out + 1] = k
            end
        end
        table.sort(out)
        return out
    end
    -- resolve a.b.c from the environment; only plain names, never calls
    local v = env
    for name, s in (path .. "."):gmatch("([%a_][%w_]*)([%.:])") do
        if s == ":" then
            return out
        end
        v = lookup(v, name)
        if v == nil then
            return out
        end
    end
    if not path:match("^[%a_][%w_]*[%w_%.]*$") or path:match("%.%.") or path:match("%.$") then
        return out
    end
    for k in pairs(fields_of(v)) do
        if k:sub(1, #prefix) == prefix then
            if sep == "." or type(lookup(v, k)) == "function" then
                out[#out + 1] = path .. sep .. k
            end
        end
    end
    table.sort(out)
    return out
end

-- ---- the loop -----------------------------------------------------------------------------------

-- Drops the frames of the REPL itself from a traceback: everything from the launcher's call on.
local function trim_traceback(msg)
    if os.getenv("CLIPL_FULL_TRACEBACK") then return msg end
    local cut = msg:find("\n%s*%[C%]: in function 'call'")
    if cut then
        msg = msg:sub(1, cut - 1)
    end
    return msg
end

local function history_file()
    local f = os.getenv("CLIPL_HISTORY")
    if f then
        return f ~= "" and f or nil
    end
    local home = os.getenv("HOME")
    return home and (home .. "/.clipl_history") or nil
end

--- Shows the help of `name` (the text after `?`).
function M.help(name)
    local ok, help = pcall(require, "clipl.help")
    if not ok then
        io.stderr:write("help is not available: ", tostring(help), "\n")
        return
    end
    print(help.text(name ~= "" and name or nil))
end

local function pack(...)
    return {n = select("#", ...), ...}
end

--- Runs the REPL on the launcher's native table until end of input. Returns the exit status.
function M.run(app)
    local interactive = app.isatty(0)
    local hist = interactive and history_file()
    if hist then
        app.history_load(hist)
    end
    app.set_completer(function(word)
        return M.complete(word)
    end)
    if interactive then
        print(string.format("clipl %s (%s)  `clip` is loaded; ?name for help, Tab completes, " ..
            "Ctrl-D quits", app.version, app.luajit))
    end
    -- each entry is saved at once (a killed REPL keeps its history); repeats are stored once
    local last
    local function remember(entry)
        if hist and entry ~= last then
            app.history_add(entry)
            app.history_save(hist)
        end
        last = entry
    end
    local buf
    while true do
        local line, why = app.readline(interactive and (buf and ">> " or "> ") or nil)
        if line == nil then
            if why == "interrupt" then
                buf = nil
                io.write("\n")
            else
                if interactive then
                    io.write("\n")
                end
                break
            end
        elseif buf == nil and line:match("^%s*%?") then
            remember(line)
            M.help((line:match("^%s*%?%s*(.-)%s*$")))
        else
            local src = buf and (buf .. "\n" .. line) or line
            if src:match("^%s*$") then
                buf = nil
            else
                local fn, err, show, incomplete = M.compile(src)
                if incomplete then
                    buf = src
                else
                    buf = nil
                    remember(src)
                    if not fn then
                        io.stderr:write(err, "\n")
                    else
                        local res = pack(app.call(fn))
                        if res[1] then
                            local n = res.n - 1
                            if show and n > 0 then
                                print(M.format_results(n, unpack(res, 2, n + 1)))
                                rawset(_G, "_", res[2])
                            end
                        else
                            io.stderr:write(trim_traceback(tostring(res[2])), "\n")
                        end
                    end
                end
            end
        end
        io.stdout:flush()
        io.stderr:flush()
    end
    if hist then
        app.history_save(hist)
    end
    return 0
end

return M
