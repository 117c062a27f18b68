# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_edgeinfer_global_optspecs
    string join \n log= bus= mqtt= node= prefix= timeout= fleet h/help V/version
end

function __fish_edgeinfer_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_edgeinfer_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_edgeinfer_using_subcommand
    set -l cmd (__fish_edgeinfer_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -s V -l version -d 'Print version'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "check" -d 'Load an ONNX model on each backend / execution provider, time it, and compare outputs'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "local" -d 'Run a task in-process on a model directory (no daemon)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "pull" -d 'Download a model folder from the Hugging Face Hub into the local cache (only the files the chosen precision variant needs; resumable; checked against the Hub\'s sha256)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "models" -d 'List the daemon\'s models and their state'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "nodes" -d 'Every node seen on the MQTT broker: state, version, models, load, last seen'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "stats" -d 'The daemon\'s counters: uptime, memory, per-model requests, errors, latency'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "load" -d 'Load a model now'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "unload" -d 'Unload a model now'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "segment" -d 'Segment an image (SAM)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "embed" -d 'Embed images (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "classify" -d 'Classify an image against the gallery (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "gallery" -d 'Gallery: add, remove, list (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "reload" -d 'Reload a local edgeinferd\'s configuration and wait until it is applied (the unit\'s ExecReload=): exits non-zero when the new configuration is refused'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "bench" -d 'Benchmarks against a running daemon'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "generate" -d 'Generate text (LLM), streamed'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "completions" -d 'Shell completions on stdout (packaged ones: daemon/assets/completions/)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "manpages" -d 'Man pages of edgeinfer (one per command) and edgeinferd, written into a folder'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "chat" -d 'Chat with an LLM interactively: each line you type is a user message, the answer streams back, and the conversation is kept (Ctrl-D or an empty line ends it)'
complete -c edgeinfer -n "__fish_edgeinfer_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l backend -d 'Backends to try: tract, ort (repeat or comma-separate). Default: tract, plus ort when an ONNX Runtime library is found or --ep is given' -r -f -a "tract\t''
ort\t''"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l ep -d 'ONNX Runtime execution providers, each tried as its own target, e.g. `cuda,openvino:NPU,cpu`. Join with `+` for one target with a preference list that falls back as in a model config, e.g. `tensorrt+cuda+cpu`' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l input -d 'An input from a .npy file: `name=path.npy` (repeatable). Other inputs get deterministic data' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l dim -d 'A value for a symbolic dimension: `name=value` (repeatable)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l runs -d 'Timed runs per target (after one warm-up run)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l save-outputs -d 'Write each output as DIR/<output>.npy (one target) or DIR/<target>/<output>.npy' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l threads -d 'Threads per session (ORT intra-op; tract matmul pool). Default: the backend\'s choice' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l ort-library -d 'ONNX Runtime library to load (else ORT_DYLIB_PATH, the onnxruntime Python package, system paths)' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l seed -d 'Seed for generated input data' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l disable-cpu-fallback -d 'ORT: every node must run on the requested provider (`session.disable_cpu_ep_fallback`): a graph the provider cannot take entirely fails to load instead of silently splitting'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -l json -d 'Machine-readable report on stdout'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand check" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -s m -l model -d 'The model directory, or `hf:OWNER/NAME[@REVISION]` for a folder `edgeinfer pull` fetched' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l family -d 'The model family (default: detected from the directory)' -r -f -a "sam\t''
sam2\t''
dinov2\t''
llama\t''"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l backend -d 'The backend: tract (pure Rust) or ort (ONNX Runtime)' -r -f -a "tract\t''
ort\t''"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l variant -d 'The graph\'s precision variant (onnx-community\'s `onnx/model_<variant>.onnx`)' -r -f -a "fp32\t''
fp16\t''
int8\t''
uint8\t''
quantized\t''
qdq\t''
q4\t''
q4f16\t''
bnb4\t''"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l ep -d 'Execution providers for ort, in order, e.g. `cuda,cpu`' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l threads -d 'Threads per session' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l ort-library -d 'ONNX Runtime library (else ORT_DYLIB_PATH, the onnxruntime Python package, system paths)' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l gallery -d 'Gallery file for classify/gallery (DINOv2)' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -f -a "segment" -d 'Segment an image with point/box prompts (SAM)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -f -a "embed" -d 'Embed images (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -f -a "classify" -d 'Classify an image against the gallery (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -f -a "gallery" -d 'Teach, forget or list gallery examples (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -f -a "generate" -d 'Generate text (LLM), streamed to the terminal'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and not __fish_seen_subcommand_from segment embed classify gallery generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l point -d 'A point `x,y` (foreground) or `x,y,0` (background), in image pixels. Repeatable' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l box -d 'A box `x0,y0,x1,y1` in image pixels' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l png -d 'Write the best mask as a PNG here' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l png-depth -d 'Bit depth of `--png`' -r -f -a "1\t'1-bit greyscale'
8\t'8-bit greyscale, 0/255'"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l format -d 'Mask encoding in the answer' -r -f -a "rle\t'COCO RLE strings (pycocotools reads them)'
png\t'1-bit PNG, base64'
png8\t'8-bit PNG, base64'
none\t'Only scores, boxes and areas'"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l single -d 'The single-mask output instead of the three candidates'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l best -d 'Only the candidate with the best predicted IoU'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from segment" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from embed" -l pooling -d 'Which vector represents an image' -r -f -a "cls\t'The CLS token'
mean\t'Mean of the patch tokens'
pooler\t'The graph\'s pooler_output'
cls_mean\t'CLS and patch mean concatenated'"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from embed" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from embed" -l normalize -d 'L2-normalise the vectors'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from embed" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from embed" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from classify" -s k -l k -d 'How many labels' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from classify" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from classify" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from classify" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from gallery" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from gallery" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from gallery" -f -a "add" -d 'Add an example image under a label'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from gallery" -f -a "remove" -d 'Remove every example of a label, or one example by id'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from gallery" -f -a "list" -d 'List labels and their example counts'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from gallery" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l system -d 'A system message (implies `--chat`)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l max-new-tokens -d 'Most new tokens' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l temperature -d 'Sampling temperature (0 = greedy)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l top-k -d 'Top-k' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l top-p -d 'Top-p' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l repetition-penalty -d 'Repetition penalty' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l seed -d 'Seed' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l stop -d 'Stop string (repeatable)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l chat -d 'Wrap the prompt in the model\'s chat template as a user message'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l ignore-eos -d 'Keep going past EOS'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -l json -d 'Print the answer (text, token ids, usage) as JSON instead of streaming text'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from generate" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "segment" -d 'Segment an image with point/box prompts (SAM)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "embed" -d 'Embed images (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "classify" -d 'Classify an image against the gallery (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "gallery" -d 'Teach, forget or list gallery examples (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "generate" -d 'Generate text (LLM), streamed to the terminal'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand local; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand pull" -l variant -d 'The precision variant to fetch. Only that variant\'s graphs are downloaded' -r -f -a "fp32\t''
fp16\t''
int8\t''
uint8\t''
quantized\t''
qdq\t''
q4\t''
q4f16\t''
bnb4\t''"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand pull" -l out -d 'Also make a plain folder here (files hard-linked from the cache, or copied), e.g. for a config `path` outside the cache' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand pull" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand pull" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l json -d 'Print JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand models" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l json -d 'Print JSON (each node\'s retained status and stats documents)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand nodes" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l prometheus -d 'Print the Prometheus text exposition (for node_exporter\'s textfile collector) instead of JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand stats" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand load" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand unload" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -s m -l model -d 'Model id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l point -d 'A point `x,y` (foreground) or `x,y,0` (background), in image pixels. Repeatable' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l box -d 'A box `x0,y0,x1,y1` in image pixels' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l png -d 'Write the best mask as a PNG here' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l png-depth -d 'Bit depth of `--png`' -r -f -a "1\t'1-bit greyscale'
8\t'8-bit greyscale, 0/255'"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l format -d 'Mask encoding in the answer' -r -f -a "rle\t'COCO RLE strings (pycocotools reads them)'
png\t'1-bit PNG, base64'
png8\t'8-bit PNG, base64'
none\t'Only scores, boxes and areas'"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l single -d 'The single-mask output instead of the three candidates'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l best -d 'Only the candidate with the best predicted IoU'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand segment" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -s m -l model -d 'Model id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l pooling -d 'Which vector represents an image' -r -f -a "cls\t'The CLS token'
mean\t'Mean of the patch tokens'
pooler\t'The graph\'s pooler_output'
cls_mean\t'CLS and patch mean concatenated'"
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l normalize -d 'L2-normalise the vectors'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand embed" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -s m -l model -d 'Model id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -s k -l k -d 'How many labels' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand classify" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -s m -l model -d 'Model id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -f -a "add" -d 'Add an example image under a label'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -f -a "remove" -d 'Remove every example of a label, or one example by id'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -f -a "list" -d 'List labels and their example counts'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and not __fish_seen_subcommand_from add remove list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from add" -l label -d 'The label' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from add" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from add" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from add" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from remove" -l label -d 'The label' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from remove" -l id -d 'The example id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from remove" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from remove" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from remove" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from list" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from list" -l json -d 'Print the answer as JSON'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from help" -f -a "add" -d 'Add an example image under a label'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from help" -f -a "remove" -d 'Remove every example of a label, or one example by id'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from help" -f -a "list" -d 'List labels and their example counts'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand gallery; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand reload" -l pid -d 'The daemon\'s pid (`$MAINPID` in the unit)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand reload" -l state-dir -d 'The daemon\'s state folder, where it reports reloads unless `$RUNTIME_DIRECTORY` is set' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand reload" -l wait -d 'Seconds to wait for the reload (models it adds or changes are loaded by then)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand reload" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand reload" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -f -a "mqtt" -d 'MQTT request → reply overhead against the model call alone, and concurrency'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -f -a "dbus" -d 'D-Bus call → reply overhead against the model call alone, and a camera frame passed as a file descriptor vs as a byte array'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and not __fish_seen_subcommand_from mqtt dbus help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l model-dir -d 'Model directory (for the in-process baseline; the daemon must serve the same one)' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l model -d 'The daemon\'s id for that model' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l backend -d 'Backend of the in-process baseline (match the daemon\'s)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l threads -d 'Threads of the in-process baseline' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l requests -d 'Requests per measurement' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l image -d 'Image to embed' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l concurrency -d 'Parallel clients for the concurrency run' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from mqtt" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l model-dir -d 'Model directory (for the in-process baseline; the daemon must serve the same one)' -r -F
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l model -d 'The daemon\'s id for that model' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l backend -d 'Backend of the in-process baseline (match the daemon\'s)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l threads -d 'Threads of the in-process baseline' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l requests -d 'Requests per measurement' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l frame -d 'Camera frame size, WIDTHxHEIGHT (raw RGB8)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from dbus" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "mqtt" -d 'MQTT request → reply overhead against the model call alone, and concurrency'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "dbus" -d 'D-Bus call → reply overhead against the model call alone, and a camera frame passed as a file descriptor vs as a byte array'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand bench; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -s m -l model -d 'Model id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l system -d 'A system message (implies `--chat`)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l max-new-tokens -d 'Most new tokens' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l temperature -d 'Sampling temperature (0 = greedy)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l top-k -d 'Top-k' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l top-p -d 'Top-p' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l repetition-penalty -d 'Repetition penalty' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l seed -d 'Seed' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l stop -d 'Stop string (repeatable)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l chat -d 'Wrap the prompt in the model\'s chat template as a user message'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l ignore-eos -d 'Keep going past EOS'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l json -d 'Print the answer (text, token ids, usage) as JSON instead of streaming text'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand generate" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand completions" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand completions" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand manpages" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand manpages" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -s m -l model -d 'Model id' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l system -d 'A system message that starts the conversation' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l max-new-tokens -d 'Most new tokens per answer' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l temperature -d 'Sampling temperature (0 = greedy)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l bus -d 'D-Bus bus of the daemon: `system` (default), `session`, or a bus address' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l mqtt -d 'Talk to the daemon over MQTT through this broker (mqtt://host:port) instead of D-Bus' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l node -d 'MQTT node name (default: the only node online)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l prefix -d 'MQTT topic prefix (default: edgeinfer)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l timeout -d 'Seconds to wait for an answer (default: 120)' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l log -d 'Log filter (e.g. `info`, `debug`, `edgeinfer_onnx=trace`). Default: warn, or RUST_LOG' -r
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -l fleet -d 'Send the task to the fleet\'s shared queue over MQTT: any node of the group that serves the model answers (docs/fleet.md)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand chat" -s h -l help -d 'Print help'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "check" -d 'Load an ONNX model on each backend / execution provider, time it, and compare outputs'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "local" -d 'Run a task in-process on a model directory (no daemon)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "pull" -d 'Download a model folder from the Hugging Face Hub into the local cache (only the files the chosen precision variant needs; resumable; checked against the Hub\'s sha256)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "models" -d 'List the daemon\'s models and their state'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "nodes" -d 'Every node seen on the MQTT broker: state, version, models, load, last seen'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "stats" -d 'The daemon\'s counters: uptime, memory, per-model requests, errors, latency'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "load" -d 'Load a model now'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "unload" -d 'Unload a model now'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "segment" -d 'Segment an image (SAM)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "embed" -d 'Embed images (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "classify" -d 'Classify an image against the gallery (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "gallery" -d 'Gallery: add, remove, list (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "reload" -d 'Reload a local edgeinferd\'s configuration and wait until it is applied (the unit\'s ExecReload=): exits non-zero when the new configuration is refused'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "bench" -d 'Benchmarks against a running daemon'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "generate" -d 'Generate text (LLM), streamed'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "completions" -d 'Shell completions on stdout (packaged ones: daemon/assets/completions/)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "manpages" -d 'Man pages of edgeinfer (one per command) and edgeinferd, written into a folder'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "chat" -d 'Chat with an LLM interactively: each line you type is a user message, the answer streams back, and the conversation is kept (Ctrl-D or an empty line ends it)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and not __fish_seen_subcommand_from check local pull models nodes stats load unload segment embed classify gallery reload bench generate completions manpages chat help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "segment" -d 'Segment an image with point/box prompts (SAM)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "embed" -d 'Embed images (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "classify" -d 'Classify an image against the gallery (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "gallery" -d 'Teach, forget or list gallery examples (DINOv2)'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from local" -f -a "generate" -d 'Generate text (LLM), streamed to the terminal'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from gallery" -f -a "add" -d 'Add an example image under a label'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from gallery" -f -a "remove" -d 'Remove every example of a label, or one example by id'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from gallery" -f -a "list" -d 'List labels and their example counts'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "mqtt" -d 'MQTT request → reply overhead against the model call alone, and concurrency'
complete -c edgeinfer -n "__fish_edgeinfer_using_subcommand help; and __fish_seen_subcommand_from bench" -f -a "dbus" -d 'D-Bus call → reply overhead against the model call alone, and a camera frame passed as a file descriptor vs as a byte array'
