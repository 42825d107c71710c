--- Finding input files for the command-line scripts.
local M = {}

M.image_extensions = {jpg = true, jpeg = true, png = true, webp = true, tif = true, tiff = true,
    gif = true, heic = true, heif = true, avif = true, bmp = true}

local function shell_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
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

return M
