-- netbe.cmdline: what every subcommand of the `netbe` command shares:
-- its options and its one-line failures. netbe.cli and netbe.topocli
-- both use it, so neither needs the other for it.
local cmdline = {}

-- Writes "netbe: MESSAGE" on stderr and returns STATUS, the exit status.
-- Writes the message on one line: control characters (a newline in a
-- value it quotes) become '?', as in netbe's own messages.
function cmdline.fail(status, fmt, ...)
  io.stderr:write("netbe: ", (string.format(fmt, ...):gsub("%c", "?")), "\n")
  return status
end

-- Prints VALUE as one line of JSON on stdout (dkjson: no encoder of our
-- own). Tables marked by cmdline.object or cmdline.array keep their kind
-- when empty.
function cmdline.print_json(value)
  io.write(require("dkjson").encode(value), "\n")
  io.stdout:flush()
end

function cmdline.object(t) return setmetatable(t or {}, { __jsontype = "object" }) end
function cmdline.array(t) return setmetatable(t or {}, { __jsontype = "array" }) end

-- fail for --json commands: also prints {"ok": false, "error": MESSAGE}
-- on stdout when JSON is true.
function cmdline.fail_json(json, status, fmt, ...)
  local msg = string.format(fmt, ...)
  if json then cmdline.print_json({ ok = false, error = (msg:gsub("%c", "?")) }) end
  return cmdline.fail(status, "%s", msg)
end

-- Splits "--name value" options from positional arguments. KNOWN maps
-- each option to true (takes a value) or false (a flag). Returns the
-- positional arguments and the options, or nil and what is wrong.
function cmdline.options(args, known)
  local pos, opt = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name = a:match("^%-%-([%w-]+)$")
    if name then
      if known[name] == nil then return nil, "unknown option --" .. name end
      if known[name] then
        i = i + 1
        if args[i] == nil then return nil, "--" .. name .. " needs a value" end
        opt[name] = args[i]
      else
        opt[name] = true
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return pos, opt
end

return cmdline
