--- Files and paths: the small checks the modules share (an environment variable, whether a file
-- or folder exists), and finding input files and models for the command-line scripts.
local M = {}

--- The value of an environment variable, or nil when it is unset or empty.
function M.getenv(name)
    local v = os.getenv(name)
    if v == nil or v == "" then
        return nil
    end
    return v
end

-- fn(f) for path opened for reading, or nil when it cannot be opened.
local function with_file(path, fn)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local r = fn(f)
    f:close()
    return r
end

--- Whether path can be opened for reading (a file, or a folder).
function M.exists(path)
    return with_file(path, function() return true end) or false
end

--- The size of a file in bytes, or nil when it cannot be opened.
function M.size(path)
    return with_file(path, function(f) return f:seek("end") end)
end

--- Whether path is a folder (one can be opened but not read as a file).
function M.is_dir(path)
    return with_file(path, function(f)
        local _, err = f:read(1)
        return err ~= nil and err:find("Is a directory", 1, true) ~= nil
    end) or false
end

M.image_extensions = {jpg = true, jpeg = true, png = true, webp = true, tif = true, tiff = true,
    gif = true, heic = true, heif = true, avif = true, bmp = true}

--- s quoted for a POSIX shell (io.popen, os.execute).
function M.shell_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end
local shell_quote = M.shell_quote

--- clip.cache_dir() ($CLIPL_CACHE, else $XDG_CACHE_HOME/clipl, else ~/.cache/clipl), or nil when
-- none of those is set.
function M.cache_dir()
    local ok, dir = pcall(require("clipl.download").cache_dir)
    return ok and dir or nil
end

--- Image files among inputs: files are taken as given, folders are walked recursively for files
-- with an image extension (sorted). A path that does not exist is kept, so that the caller reports
-- it as unreadable.
function M.images(inputs)
    local files = {}
    for _, p in ipairs(inputs) do
        local pipe = io.popen("find " .. shell_quote(p) .. " -type f 2>/dev/null | LC_ALL=C sort")
        local found = false
        for f in pipe:lines() do
            found = true
            local ext = f:match("%.([%w]+)$")
            if f == p or (ext and M.image_extensions[ext:lower()]) then
                files[#files + 1] = f
            end
        end
        pipe:close()
        if not found then
            files[#files + 1] = p
        end
    end
    return files
end

--- Non-empty lines of a text file (trailing CR and surrounding spaces removed).
function M.lines(path)
    local f, err = io.open(path, "r")
    if not f then
        error(err, 2)
    end
    local out = {}
    for line in f:lines() do
        line = line:gsub("\r$", ""):match("^%s*(.-)%s*$")
        if line ~= "" then
            out[#out + 1] = line
        end
    end
    f:close()
    return out
end

--- The model a script should load: name when given, else the bundled model's path. Returns the
-- name, or nil and a message that says what to do when there is no bundled model.
function M.model(name, command)
    if name and name ~= "" then
        return name
    end
    local clip = require "clipl"
    local ok, bundled = pcall(function() return clip.bundled_model and clip.bundled_model() end)
    if ok and type(bundled) == "table" and bundled.path then
        return bundled.path, nil, bundled
    end
    return nil, "no --model given and no bundled model in this build yet; pass " ..
        "--model NAME|FILE|FOLDER" ..
        " (e.g. `clipl " .. (command or "zeroshot") .. " --model ViT-B/32 ...` after " ..
        "`clipl download ViT-B/32`)"
end

--- The model of a script's --model (or the bundled model), loaded with clip.load(name, opts).
-- Returns the model, or nil and a message (no model to load, or clip.load's error).
function M.load_model(name, command, opts)
    local path, why = M.model(name, command)
    if not path then
        return nil, why
    end
    local ok, model = pcall(require("clipl").load, path, opts)
    if not ok then
        return nil, model
    end
    return model
end

--- The model of a script run from the command line: applies --threads (args.threads), then loads
-- --model (args.model; the bundled model when absent) or ends the script with the reason
-- (clipl.cli's die, naming command).
function M.script_model(args, command)
    if args.threads then
        require("clipl").set_num_threads(args.threads)
    end
    local model, why = M.load_model(args.model, command)
    if not model then
        require("clipl.cli").die(command, why)
    end
    return model
end

--- The clipl.cli options of a script that learns on labelled images (--model, --train, --test,
-- --label-column; see M.train_test), followed by the script's own.
function M.train_test_options(own)
    local out = {
        {"-m", "--model", arg = "M", help = "model (default: the bundled model)"},
        {"--train", arg = "FILE|DIR", required = true, help = "labelled images: CSV/TSV or " ..
            "a folder per class"},
        {"--test", arg = "FILE|DIR", required = true, help = "labelled test images"},
        {"--label-column", arg = "COL", help = "class column of a CSV/TSV (a+b joins columns)"},
    }
    for _, o in ipairs(own) do
        out[#out + 1] = o
    end
    return out
end

-- A labelled data set (clip.train.dataset), or nil and a message.
local function labelled_dataset(path, label_column)
    local ok, ds = pcall(require("clipl").train.dataset, path, {label_column = label_column})
    if not ok then
        return nil, ds
    end
    if not ds.classes then
        return nil, path .. ": give --label-column (the class of each row)"
    end
    return ds
end

--- The labelled training and test sets of a script's --train / --test (clip.train.dataset), the
-- test labels renumbered into the training set's classes. Returns train, test, or nil and a
-- message (a dataset's error, no classes: a CSV/TSV needs --label-column, or a test class that
-- is not in the training set).
function M.train_test(train_path, test_path, label_column)
    local train, why = labelled_dataset(train_path, label_column)
    if not train then
        return nil, why
    end
    local test, why_test = labelled_dataset(test_path, label_column)
    if not test then
        return nil, why_test
    end
    local index = {}
    for i, c in ipairs(train.classes) do
        index[c] = i
    end
    for _, it in ipairs(test.items) do
        local c = test.classes[it.label]
        if not index[c] then
            return nil, test_path .. ": class '" .. c .. "' is not in the training set"
        end
        it.label = index[c]
    end
    return train, test
end

return M
