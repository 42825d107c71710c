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

return M
