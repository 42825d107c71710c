--- A tiny HTTP/1.1 file server for the download tests (LuaSocket; LuaJIT or Lua 5.1).
--
--   luajit tests/http_server.lua ROOT [--log FILE] [--max-requests N] [--max-seconds S]
--
-- Listens on 127.0.0.1 on a free port, prints the port on stdout (one line), then serves files
-- under ROOT, one connection at a time (Connection: close). GET and HEAD, with single Range
-- requests ("bytes=N-" and "bytes=N-M": 206 + Content-Range; 416 when N is past the end). The
-- first path segment may choose a misbehaviour, and is removed before the file is looked up:
--   /norange/...  ignores Range and always sends the whole file with 200
--   /corrupt/...  flips one byte in every 64 KiB block of the body it sends
--   /drop/...     announces the full length, sends half of it, and closes the connection
--   /slow/...     sends 16 KiB every 20 ms (for cancel and progress tests)
--   /__quit       stops the server
-- Each request is appended to the log file as "METHOD PATH RANGE" (RANGE is "-" when absent).
-- The server stops by itself after N requests (default 100) or S seconds (default 60).
local socket = require "socket"

local root, log_path = nil, nil
local max_requests, max_seconds = 100, 60
do
    local i = 1
    while i <= #arg do
        local a = arg[i]
        if a == "--log" then
            log_path = arg[i + 1]
            i = i + 1
        elseif a == "--max-requests" then
            max_requests = tonumber(arg[i + 1])
            i = i + 1
        elseif a == "--max-seconds" then
            max_seconds = tonumber(arg[i + 1])
            i = i + 1
        elseif not root then
            root = a
        else
            io.stderr:write("http_server: unexpected argument ", a, "\n")
            os.exit(2)
        end
        i = i + 1
    end
end
if not root then
    io.stderr:write("usage: http_server.lua ROOT [--log FILE] [--max-requests N] " ..
        "[--max-seconds S]\n")
    os.exit(2)
end

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
io.stdout:write(port, "\n")
io.stdout:flush()
server:settimeout(0.2)

local function log(line)
    if log_path then
        local f = io.open(log_path, "ab")
        if f then
            f:write(line, "\n")
            f:close()
        end
    end
end

local function respond(client, code, reason, headers, body)
    local out = {("HTTP/1.1 %d %s\r\n"):format(code, reason)}
    for _, h in ipairs(headers) do
        out[#out + 1] = h .. "\r\n"
    end
    out[#out + 1] = "Connection: close\r\n\r\n"
    client:send(table.concat(out))
    if body then
        client:send(body)
    end
end

local function file_size(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local size = f:seek("end")
    f:close()
    return size
end

local function serve(client)
    client:settimeout(5)
    local request = client:receive("*l")
    if not request then
        return true
    end
    local method, target = request:match("^(%u+) (%S+) HTTP/1%.%d$")
    local range
    while true do
        local line = client:receive("*l")
        if not line or line == "" then
            break
        end
        local k, v = line:match("^([^:]+):%s*(.-)%s*$")
        if k and k:lower() == "range" then
            range = v
        end
    end
    log(("%s %s %s"):format(method or "?", target or "?", range or "-"))
    if not method or (method ~= "GET" and method ~= "HEAD") then
        respond(client, 400, "Bad Request", {"Content-Length: 0"})
        return true
    end
    if target == "/__quit" then
        respond(client, 200, "OK", {"Content-Length: 0"})
        return false
    end
    local path = target:gsub("%?.*$", "")
    local mode = "plain"
    local first, rest = path:match("^/([^/]+)(/.*)$")
    if first == "norange" or first == "corrupt" or first == "drop" or first == "slow" then
        mode, path = first, rest
    end
    if path:find("%.%.") then
        respond(client, 403, "Forbidden", {"Content-Length: 0"})
        return true
    end
    local file = root .. path
    local size = file_size(file)
    if not size or path:sub(-1) == "/" then
        respond(client, 404, "Not Found", {"Content-Length: 9", "Content-Type: text/plain"},
            method == "GET" and "not found" or nil)
        return true
    end
    local first_byte, last_byte, code, reason = 0, size - 1, 200, "OK"
    local headers = {"Accept-Ranges: bytes", "Content-Type: application/octet-stream"}
    if range and mode ~= "norange" then
        local a, b = range:match("^bytes=(%d+)%-(%d*)$")
        if not a then
            respond(client, 416, "Range Not Satisfiable",
                {"Content-Range: bytes */" .. size, "Content-Length: 0"})
            return true
        end
        a, b = tonumber(a), tonumber(b)
        if a >= size then
            respond(client, 416, "Range Not Satisfiable",
                {"Content-Range: bytes */" .. size, "Content-Length: 0"})
            return true
        end
        first_byte, last_byte = a, math.min(b or size - 1, size - 1)
        code, reason = 206, "Partial Content"
        headers[#headers + 1] = ("Content-Range: bytes %d-%d/%d"):format(first_byte, last_byte,
            size)
    end
    local length = last_byte - first_byte + 1
    headers[#headers + 1] = "Content-Length: " .. length
    respond(client, code, reason, headers)
    if method == "HEAD" then
        return true
    end
    local f = assert(io.open(file, "rb"))
    f:seek("set", first_byte)
    local to_send = length
    if mode == "drop" then
        to_send = math.floor(length / 2)
    end
    local chunk = mode == "slow" and 16384 or 65536
    local pos = first_byte
    while to_send > 0 do
        local data = f:read(math.min(chunk, to_send))
        if not data then
            break
        end
        if mode == "corrupt" then
            -- flip the first byte of every 64 KiB block of the file that this chunk touches
            local i = (65536 - pos % 65536) % 65536 + 1
            while i <= #data do
                data = data:sub(1, i - 1) .. string.char(255 - data:byte(i)) .. data:sub(i + 1)
                i = i + 65536
            end
        end
        local ok = client:send(data)
        if not ok then
            break
        end
        pos = pos + #data
        to_send = to_send - #data
        if mode == "slow" then
            socket.sleep(0.02)
        end
    end
    f:close()
    return true
end

local started = socket.gettime()
local served = 0
while served < max_requests and socket.gettime() - started < max_seconds do
    local client = server:accept()
    if client then
        served = served + 1
        local ok, keep_going = pcall(serve, client)
        client:close()
        if ok and keep_going == false then
            break
        end
        if not ok then
            io.stderr:write("http_server: ", tostring(keep_going), "\n")
        end
    end
end
server:close()
