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
