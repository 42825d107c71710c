std = "luajit"
max_line_length = 100
codes = true
-- busted's globals in the specs
files["tests/spec"] = {std = "+busted", max_line_length = 120}
files["tests/spec/helpers.lua"] = {std = "+busted"}
-- scripts get `arg` like luajit scripts
files["scripts"] = {read_globals = {"arg"}}
files["bench"] = {read_globals = {"arg"}}
exclude_files = {"build*/**", "**/clipl_h.lua"}
-- the REPL spec reassigns (fn, err, show) from successive compile() calls on purpose
files["tests/spec/launcher_spec.lua"] = {std = "+busted", max_line_length = 120, ignore = {"311"}}
