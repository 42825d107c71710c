-- The `clipl` launcher (engine/app/main.c) run as a program: run / -e / -i / --version / help /
-- subcommands / errors / arg passing / the REPL over a pipe, and the Lua helpers it ships
-- (clipl.repl, clipl.help, clipl.cli, clipl.progress). The REPL in a terminal is driven through
-- tmux by tests/repl_tmux.sh, called at the end.
local H = require "helpers_env"
local q, slurp, write = H.q, H.slurp, H.write
local build, bin = H.build()
local here = H.root .. "/tests"
local tmp = H.tmpdir()

-- Runs a shell command line; returns {out, err, code}. stdin is `input` (or empty).
local function sh(cmd, input, env)
    local inf = tmp .. "/in"
    write(inf, input or "")
    return H.capture(tmp, string.format("cd %s && env CLIPL_HISTORY= %s %s <%s", q(tmp), env or "",
        cmd, q(inf)))
end

local function clipl(args, input, env)
    return sh(q(bin) .. " " .. args, input, env)
end

describe("clipl launcher", function()
    it("exists in the build tree", function()
        assert.is_truthy(io.open(bin, "rb"), "no launcher at " .. bin)
    end)

    it("prints its version and the library's", function()
        local r = clipl("--version")
        assert.equal(0, r.code)
        assert.matches("^clipl %d+%.%d+%.%d+ %(libclipl %d+%.%d+%.%d+, LuaJIT 2%.1", r.out)
    end)

    it("prints usage and the subcommands with their descriptions", function()
        write(tmp .. "/hello.lua", "-- say hello to the arguments\nprint('hello', ...)\n")
        write(tmp .. "/helper.lua", "return {}\n")
        write(tmp .. "/shebang.lua", "#!/usr/bin/env clipl\n-- a script with a #! line\n")
        for _, h in ipairs({"help", "--help", "-h"}) do
            local r = clipl(h, nil, "CLIPL_SCRIPTS=" .. q(tmp))
            assert.equal(0, r.code)
            assert.matches("usage: clipl", r.out, 1, true)
            assert.matches("\n  hello +say hello to the arguments\n", r.out)
            assert.matches("\n  shebang +a script with a #! line\n", r.out)
            assert.not_matches("helper", r.out, 1, true)
        end
    end)

    it("runs -e with clip loaded and ARGS in arg and ...", function()
        local r = clipl("-e " .. q("print(select('#', ...), arg[1], arg[2], (...)) " ..
            "print(clip.tensor{{1, 2}}:t():size()[1])") .. " a 'b c'")
        assert.equal(0, r.code, r.err)
        assert.equal("2\ta\tb c\ta\n2\n", r.out)
    end)

    it("runs a script with arg like luajit (arg[0] = script) and returns 0", function()
        write(tmp .. "/s.lua", [[
local clip = require "clipl"
print(arg[0], #arg, arg[1], arg[2], select("#", ...))
print(arg[-1], arg[-2] ~= nil)
print(clip.tensor{1, 2, 3}:numel())
]])
        local r = clipl("run s.lua x 'y z'")
        assert.equal(0, r.code, r.err)
        assert.equal("s.lua\t2\tx\ty z\t2\nrun\ttrue\n3\n", r.out)
        -- `run -` reads the script from stdin
        r = clipl("run - q", "print('from stdin', ...)\n")
        assert.equal(0, r.code, r.err)
        assert.equal("from stdin\tq\n", r.out)
        -- a path ending in .lua runs directly
        r = clipl("./s.lua 1")
        assert.equal(0, r.code, r.err)
        assert.matches("^%./s%.lua\t1\t1\tnil\t1\n", r.out)
    end)

    it("reports script errors as `clipl: message` with a traceback and exits 1", function()
        write(tmp .. "/bad.lua", "local function f()\n  error('boom')\nend\nf()\n")
        local r = clipl("run bad.lua")
        assert.equal(1, r.code)
        assert.equal("", r.out)
        assert.matches("^clipl: bad%.lua:2: boom\nstack traceback:\n", r.err)
        assert.matches("bad.lua:4: in main chunk", r.err, 1, true)
    end)

    it("reports errors raised by the library (bad tensor op) without crashing", function()
        local r = clipl("-e " .. q("clip.tensor{{1, 2}}:view(3)"))
        assert.equal(1, r.code)
        assert.matches("^clipl: ", r.err)
        assert.matches("stack traceback", r.err, 1, true)
    end)

    it("reports non-string error objects, syntax errors and missing files", function()
        local r = clipl("-e " .. q("error({})"))
        assert.equal(1, r.code)
        assert.matches("^clipl: %(error object is a table value%)", r.err)
        r = clipl("-e " ..
            q("error(setmetatable({}, {__tostring = function() return 'custom' end}))"))
        assert.equal(1, r.code)
        assert.matches("^clipl: custom\n", r.err)
        r = clipl("-e " .. q("x = = 1"))
        assert.equal(1, r.code)
        assert.matches("^clipl: %(command line%):1: unexpected symbol near '='", r.err)
        r = clipl("run /nonexistent/none.lua")
        assert.equal(1, r.code)
        assert.matches("^clipl: cannot open /nonexistent/none%.lua", r.err)
    end)

    it("turns SIGINT into an 'interrupted!' error and clipl_interrupt(1) for C loops", function()
        -- an interpreted loop (jit.off) sees the hook; the script catches the error itself and
        -- reads the library's interrupt flag, which stays set until the statement ends
        write(tmp .. "/spin.lua", [[
jit.off()
io.write("ready\n") io.flush()
local ok, err = pcall(function() while true do end end)
print(ok, err, clip.lib.C.clipl_interrupted())
]])
        -- start it, wait until it says "ready" (in `out`, where sh() sends stdout), then Ctrl-C
        local function interrupt(script)
            return sh("sh -c " .. q(q(bin) .. " run " .. script .. " & pid=$!; i=0;" ..
                " while [ ! -s out ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done;" ..
                " sleep 0.2; kill -INT $pid; wait $pid"))
        end
        local r = interrupt("spin.lua")
        assert.equal(0, r.code, r.err)
        assert.equal("ready\nfalse\tinterrupted!\t1\n", r.out)
        -- uncaught, it ends the script with status 1 and a traceback
        write(tmp .. "/spin2.lua", "jit.off() io.write('ready\\n') io.flush() while true do end\n")
        r = interrupt("spin2.lua")
        assert.equal(1, r.code)
        assert.matches("^clipl: interrupted!\nstack traceback:", r.err)
    end)

    it("passes os.exit codes through", function()
        assert.equal(3, clipl("-e " .. q("os.exit(3)")).code)
    end)

    it("rejects unknown commands and options, and missing operands, with exit 2", function()
        local r = clipl("nosuchcommand", nil, "CLIPL_SCRIPTS=" .. q(tmp))
        assert.equal(2, r.code)
        assert.matches("clipl: unknown command 'nosuchcommand'", r.err, 1, true)
        r = clipl("--frobnicate")
        assert.equal(2, r.code)
        assert.matches("clipl: unknown option '--frobnicate'", r.err, 1, true)
        r = clipl("run")
        assert.equal(2, r.code)
        assert.matches("run: missing the script file", r.err, 1, true)
        r = clipl("-e")
        assert.equal(2, r.code)
        assert.matches("-e: missing the code", r.err, 1, true)
        r = clipl("help nosuchcommand", nil, "CLIPL_SCRIPTS=" .. q(tmp))
        assert.equal(2, r.code)
        assert.matches("no subcommand 'nosuchcommand'", r.err, 1, true)
    end)

    it("has --help on run, -i and -e", function()
        for _, c in ipairs({"run --help", "-i --help", "-e --help"}) do
            local r = clipl(c)
            assert.equal(0, r.code, c)
            assert.matches("^usage: clipl ", r.out)
        end
    end)

    it("runs subcommands from the scripts folder with their arguments", function()
        write(tmp .. "/greet.lua", [[
-- greet people (a test subcommand)
local cli = require "clipl.cli"
local args = cli.parser {
    name = "greet",
    description = "Greets people.",
    options = {{"-n", "--times", arg = "N", type = "integer", default = 1, help = "repeat"}},
    positional = {{"names", nargs = "+", help = "who"}},
}:parse(arg)
for _ = 1, args.times do print("hi " .. table.concat(args.names, ", ")) end
]])
        local env = "CLIPL_SCRIPTS=" .. q(tmp)
        local r = clipl("greet -n 2 ann bob", nil, env)
        assert.equal(0, r.code, r.err)
        assert.equal("hi ann, bob\nhi ann, bob\n", r.out)
        r = clipl("greet --help", nil, env)
        assert.equal(0, r.code)
        assert.matches("^usage: clipl greet %[options%] NAMES%.%.%.\n\nGreets people%.", r.out)
        r = clipl("help greet", nil, env)
        assert.equal(0, r.code)
        assert.matches("^usage: clipl greet", r.out)
        r = clipl("greet -n x ann", nil, env)
        assert.equal(2, r.code)
        assert.matches("^clipl greet: option %-n: expected an integer, got 'x'\nusage:", r.err)
        r = clipl("greet", nil, env)
        assert.equal(2, r.code)
        assert.matches("missing argument NAMES", r.err, 1, true)
        -- the script sees its own path in arg[0], as under luajit
        write(tmp .. "/where.lua", "-- where am I\nprint(arg[0], arg[1], ...)\n")
        r = clipl("where x", nil, env)
        assert.equal(0, r.code, r.err)
        assert.equal(tmp .. "/where.lua\tx\tx\n", r.out)
    end)

    it("finds the subcommands of the scripts folder in clipl.config", function()
        local config = require "clipl.config"
        local r = clipl("help")
        assert.equal(0, r.code)
        local f = io.open(config.scripts .. "/download.lua")
        if f then
            f:close()
            assert.matches("\n  download ", r.out)
        end
    end)
end)

describe("clipl REPL over a pipe", function()
    it("prints expression results, hides them after ;, and keeps going after errors", function()
        local r = clipl("", table.concat({
            "x = 20 + 1",
            "x * 2",
            "x * 3;",
            "'s', nil, {1, a = 2}",
            "error('bad')",
            "nil + 1",
            "print('still here')",
            "for i = 1, 3 do",
            "  io.write(i, ' ')",
            "end",
            "return x",
            "=x + 1",
            "local t = {",
            "  1,",
            "  2}  return #t",
            "?clip.tensor",
            "?no_such_thing",
        }, "\n") .. "\n")
        assert.equal(0, r.code)
        assert.equal(table.concat({
            "42",
            '"s"',
            "nil",
            "{1, a = 2}",
            "still here",
            "1 2 3 21",
            "22",
            "2",
        }, "\n") .. "\n", r.out:match("^(.-)clip%.tensor%("))
        assert.matches("clip.tensor(data, dtype)\n", r.out, 1, true)
        assert.matches("no help for 'no_such_thing'", r.out, 1, true)
        assert.matches("^stdin:1: bad\nstack traceback:\n", r.err)
        assert.matches("stdin:1: attempt to perform arithmetic on a nil value", r.err, 1, true)
        -- the REPL's own frames are not shown
        assert.not_matches("repl.lua", r.err, 1, true)
    end)

    it("prints tensors with their own format", function()
        local r = clipl("", "clip.tensor{{1, 2}, {3, 4}}\n")
        assert.equal(0, r.code, r.err)
        assert.matches("^ 1  2\n 3  4\n%[clipl%.FloatTensor of size 2x2%]\n", r.out)
    end)

    it("runs -i FILE, then reads the REPL with the script's globals", function()
        write(tmp .. "/init.lua", "greeting = 'hi ' .. arg[1]\n")
        local r = clipl("-i init.lua you", "greeting\n")
        assert.equal(0, r.code, r.err)
        assert.equal('"hi you"\n', r.out)
        -- after an error in the script too (as python -i), with what it left
        write(tmp .. "/fails.lua", "partial = 41\nerror('stopped')\n")
        r = clipl("-i fails.lua", "partial + 1\n")
        assert.equal(0, r.code)
        assert.equal("42\n", r.out)
        assert.matches("^clipl: fails%.lua:2: stopped\n", r.err)
    end)
end)

describe("clipl.repl", function()
    local repl = require "clipl.repl"
    local tensor = require "clipl.tensor"

    it("tells incomplete chunks from wrong ones (LuaJIT's '<eof>' rule)", function()
        local fn, err, show, incomplete = repl.compile("for i = 1, 2 do")
        assert.is_nil(fn)
        assert.is_true(incomplete)
        fn, err, show, incomplete = repl.compile("x = [[abc")
        assert.is_true(incomplete)
        fn, err, show, incomplete = repl.compile("x = = 1")
        assert.is_nil(fn)
        assert.is_false(incomplete)
        assert.matches("unexpected symbol", err, 1, true)
        fn, err, show = repl.compile("1 + 1")
        assert.is_true(show)
        assert.equal(2, fn())
        fn, err, show = repl.compile("1 + 1;")
        assert.is_false(show)
        fn, err, show = repl.compile("x = 1")
        assert.is_function(fn)
        assert.is_true(show) -- it returns nothing, so nothing is printed
        assert.equal(0, select("#", fn()))
        fn, err, show = repl.compile("local t = {1, 2} return #t")
        assert.is_true(show)
        assert.equal(2, fn())
        fn, err, show = repl.compile("return 1;")
        assert.is_false(show)
        -- a trailing comment does not break the expression form
        fn = repl.compile("1 + 2 -- three")
        assert.equal(3, fn())
    end)

    it("completes globals, keywords, fields and tensor methods", function()
        local env = {print = print, clip = {tensor = tensor.tensor, zeros = tensor.zeros,
            image = {load = print}}, t = tensor.zeros({2, 2}), s = "str"}
        assert.same({"print"}, repl.complete("pri", env))
        assert.same({"function"}, repl.complete("func", env))
        assert.same({"clip.tensor"}, repl.complete("clip.ten", env))
        assert.same({"clip.image.load"}, repl.complete("clip.image.l", env))
        assert.same({"clip.image", "clip.tensor", "clip.zeros"}, repl.complete("clip.", env))
        assert.same({"t:size"}, repl.complete("t:si", env))
        local all = repl.complete("t:", env)
        local n = 0
        for name in pairs(tensor.Tensor) do
            if type(tensor.Tensor[name]) == "function" then n = n + 1 end
        end
        assert.equal(n, #all)
        if tensor.Tensor.softmax then
            assert.same({"t:softmax"}, repl.complete("t:so", env))
        end
        assert.same({"s:upper"}, repl.complete("s:up", env))
        -- methods only after ':'; nothing for unknown paths or calls
        assert.same({}, repl.complete("clip:ima", env))
        assert.same({}, repl.complete("nope.x", env))
        assert.same({}, repl.complete("f().x", env))
    end)

    it("finds methods through __index chains", function()
        local Base = {hello = print}
        Base.__index = Base
        local obj = setmetatable({field = 1}, Base)
        assert.same({"obj.field", "obj.hello"}, repl.complete("obj.", {obj = obj}))
        assert.same({"obj:hello"}, repl.complete("obj:", {obj = obj}))
        -- metamethods only when asked for
        assert.same({"Base.__index"}, repl.complete("Base.__", {Base = Base}))
    end)

    it("pretty-prints values", function()
        assert.equal('"a\\"b"', repl.pretty('a"b'))
        assert.equal("{1, 2, x = {y = 1}}", repl.pretty({1, 2, x = {y = 1}}))
        local cyc = {}
        cyc.self = cyc
        assert.matches("^{self = <cycle: table", repl.pretty(cyc))
        local long = {}
        for i = 1, 100 do long[i] = i end
        assert.matches("^{ 1, 2, .*, 40, %.%.%. }$", (repl.pretty(long):gsub("%s+", " ")))
        assert.equal("{t = clipl.FloatTensor[2x3]}", repl.pretty({t = tensor.zeros({2, 3})}))
    end)
end)

describe("clipl.help", function()
    local help = require "clipl.help"
    local clip = require "clipl"

    it("shows the doc comment and signature of a function", function()
        local text = help.text("clip.tensor")
        assert.matches("^clip%.tensor%(data, dtype%)\nA tensor from a %(nested%) Lua table", text)
        assert.equal(text, help.text(clip.tensor))
        assert.equal(text, help.text("tensor"))
        local v = help.text("t:view")
        assert.matches("^t:view%(%.%.%.%)\n", v)
        assert.equal(v, help.text(clip.Tensor.view))
        assert.equal(v, help.text("Tensor.view"))
    end)

    it("says when there is no help, and handles builtins, modules and registered texts", function()
        assert.matches("^no help for 'nope'", help.text("nope"))
        assert.matches("builtin", help.text("print"))
        assert.matches("^clip%.help%(fn_or_name%)\nPrints the help", help.text("clip.help"))
        local mod = help.text("string")
        assert.matches("string%.format", mod)
        help.register("my_thing", "what my thing does")
        assert.equal("my_thing\nwhat my thing does", help.text("my_thing"))
        assert.matches("Functions and modules of clip:", help.text())
        assert.is_function(clip.help)
    end)
end)

describe("clipl.cli", function()
    local cli = require "clipl.cli"
    local p = cli.parser {
        name = "t",
        description = "desc",
        options = {
            {"-m", "--model", arg = "NAME", default = "ViT-B/32", help = "model"},
            {"-k", "--top-k", arg = "N", type = "number", default = 5, help = "k"},
            {"-l", "--label", arg = "TEXT", multi = true, help = "label"},
            {"--json", help = "json"},
            {"--mode", arg = "M", choices = {"a", "b"}, help = "mode"},
        },
        positional = {{"first"}, {"rest", nargs = "*"}},
    }

    it("parses options in every form and positionals", function()
        local a = assert(p:parse_args({"x", "-k", "3", "--model=RN50", "-l", "a", "-lb", "--json",
            "y", "--", "-z"}))
        assert.equal("x", a.first)
        assert.same({"y", "-z"}, a.rest)
        assert.equal(3, a.top_k)
        assert.equal("RN50", a.model)
        assert.same({"a", "b"}, a.label)
        assert.is_true(a.json)
        a = assert(p:parse_args({"only"}))
        assert.equal("ViT-B/32", a.model)
        assert.equal(5, a.top_k)
        assert.is_false(a.json)
        assert.same({}, a.label)
        assert.same({}, a.rest)
    end)

    it("returns clear errors and help", function()
        assert.same({nil, "help"}, {p:parse_args({"--help"})})
        assert.same({nil, "unknown option --nope"}, {p:parse_args({"x", "--nope"})})
        assert.same({nil, "option -k: expected a number, got 'z'"},
            {p:parse_args({"x", "-k", "z"})})
        assert.same({nil, "option --model needs a value (NAME)"}, {p:parse_args({"x", "--model"})})
        assert.same({nil, "option --json takes no value"}, {p:parse_args({"x", "--json=1"})})
        assert.same({nil, "missing argument FIRST"}, {p:parse_args({})})
        assert.same({nil, "option --mode: 'c' is not one of a, b"},
            {p:parse_args({"x", "--mode", "c"})})
        local h = p:help()
        assert.matches("^usage: clipl t %[options%] FIRST %[REST%.%.%.%]\n\ndesc\n", h)
        assert.matches("%-k, %-%-top%-k N +k %(default: 5%)", h)
    end)
end)

describe("clipl.progress", function()
    local progress = require "clipl.progress"

    it("renders counts, percentages and rates, and stays silent off a terminal", function()
        local bar = progress.new(200, {label = "embed", unit = "img", width = 10})
        bar.start = 0
        bar.n = 50
        assert.equal("embed  25% |###       | 50/200 [00:10<00:30, 5.00 img/s]", bar:render(10))
        local open = progress.new(nil, {unit = "batch"})
        open.start, open.n = 0, 3
        assert.equal("3 batch [00:02, 1.50 batch/s]", open:render(2))
        assert.equal("1:01:01", progress.hms(3661))
        local path = tmp .. "/bar"
        local f = assert(io.open(path, "w"))
        local quiet = progress.new(10, {stream = f})
        quiet:update(5)
        quiet:finish()
        f:close()
        assert.equal("", slurp(path))
    end)
end)

describe("clipl REPL in a terminal", function()
    it("completes, continues lines, survives errors and Ctrl-C (tests/repl_tmux.sh)", function()
        if os.execute("command -v tmux >/dev/null 2>&1") ~= 0 then
            print("SKIP: tmux is not installed (scripts/setup installs it)")
            return
        end
        local r = sh("sh " .. q(here .. "/repl_tmux.sh") .. " " .. q(build))
        assert.equal(0, r.code, r.out .. r.err)
    end)
end)
