--- A progress bar for long loops in scripts (embedding a folder, an epoch of training):
--
--   local progress = require "clipl.progress"
--   local bar = progress.new(#files, {label = "embed", unit = "img"})
--   for i, f in ipairs(files) do ...; bar:update(1) end
--   bar:finish()
--
-- It draws on stderr, at most 10 times a second, and only when stderr is a terminal (or when
-- opts.force is set), so piped output and logs stay clean.
local ffi = require "ffi"

pcall(ffi.cdef, "int isatty(int fd);")
pcall(ffi.cdef, [[
struct clipl_progress_timespec { long tv_sec; long tv_nsec; };
int clock_gettime(int clk_id, struct clipl_progress_timespec *tp);
]])

local M = {}

local ts = ffi.new("struct clipl_progress_timespec")
--- Wall-clock seconds from a monotonic clock.
function M.now()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local Bar = {}
Bar.__index = Bar

local function hms(s)
    if s ~= s or s == math.huge or s < 0 then
        return "?"
    end
    s = math.floor(s + 0.5)
    if s >= 3600 then
        return string.format("%d:%02d:%02d", s / 3600, s % 3600 / 60, s % 60)
    end
    return string.format("%02d:%02d", s / 60, s % 60)
end
M.hms = hms

--- A bar for `total` steps (nil when unknown). opts: label, unit ("it"), width (bar cells, 30),
-- stream (io.stderr), force (draw even when the stream is not a terminal), interval (0.1 s).
function M.new(total, opts)
    opts = opts or {}
    local stream = opts.stream or io.stderr
    local fd = stream == io.stdout and 1 or 2
    local bar = setmetatable({
        total = total, n = 0, label = opts.label, unit = opts.unit or "it",
        width = opts.width or 30, stream = stream, interval = opts.interval or 0.1,
        start = M.now(), last = -math.huge, postfix = nil,
        enabled = opts.force or ffi.C.isatty(fd) == 1,
    }, Bar)
    return bar
end

--- The text of the bar as it would be drawn now.
function Bar:render(now)
    now = now or M.now()
    local elapsed = now - self.start
    local rate = elapsed > 0 and self.n / elapsed or 0
    local parts = {}
    if self.label then
        parts[#parts + 1] = self.label
    end
    if self.total and self.total > 0 then
        local frac = math.min(1, self.n / self.total)
        local filled = math.floor(frac * self.width + 0.5)
        parts[#parts + 1] = string.format("%3d%% |%s%s| %d/%d", math.floor(frac * 100),
            string.rep("#", filled), string.rep(" ", self.width - filled), self.n, self.total)
        local eta = rate > 0 and (self.total - self.n) / rate or math.huge
        parts[#parts + 1] = string.format("[%s<%s, %.2f %s/s]", hms(elapsed), hms(eta), rate,
            self.unit)
    else
        parts[#parts + 1] = string.format("%d %s [%s, %.2f %s/s]", self.n, self.unit,
            hms(elapsed), rate, self.unit)
    end
    if self.postfix then
        parts[#parts + 1] = self.postfix
    end
    return table.concat(parts, " ")
end

function Bar:draw(force)
    if not self.enabled then
        return
    end
    local now = M.now()
    if not force and now - self.last < self.interval then
        return
    end
    self.last = now
    self.stream:write("\r", self:render(now), "\027[K")
    self.stream:flush()
end

--- Advances by k steps (default 1) and redraws when due.
function Bar:update(k)
    self.n = self.n + (k or 1)
    self:draw(false)
end

--- Sets the position to n.
function Bar:set(n)
    self.n = n
    self:draw(false)
end

--- Text shown after the bar (a loss, an accuracy).
function Bar:set_postfix(text)
    self.postfix = text
end

--- Draws the final state and ends the line.
function Bar:finish()
    if self.enabled then
        self:draw(true)
        self.stream:write("\n")
        self.stream:flush()
    end
end

return M
