# Shared by the tools/ scripts (source it): field FILE KEY prints the value of "KEY" in a JSON
# summary written by tqp (one key per line, as cJSON prints it), quotes and comma removed.
field() { awk -v k="\"$2\"" '{ sub(/^[ \t]+/, "") } index($0, k ":") == 1 {
  v = substr($0, length(k) + 2); gsub(/^[ \t]+|[ \t]*,?$|"/, "", v); print v; exit }' "$1"; }
