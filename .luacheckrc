std = "luajit"
max_line_length = 100
codes = true
-- busted's globals in the specs
files["tests/spec"] = {std = "+busted"}
files["tests/spec/helpers.lua"] = {std = "+busted"}
-- scripts get `arg` like luajit scripts
files["scripts"] = {read_globals = {"arg"}}
files["bench"] = {read_globals = {"arg"}}
exclude_files = {"build*/**", "**/clipl_h.lua"}
