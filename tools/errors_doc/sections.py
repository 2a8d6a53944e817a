S = {}
INTRO = r'''
# Diagnostics

Every problem `cnnc` finds is a *diagnostic* with a stable code. `E` codes are errors:
the file is rejected and `cnnc check` exits with status 1. `W` codes are warnings: the
network still checks, and the exit status is 0. `E0001`–`E0017` are found while the file
is read and expanded (syntax, names, arguments, expressions); `E0101`–`E0109` by the shape
checker, which follows every tensor through the network; `W0001`–`W0003` are warnings.

## How diagnostics look

`cnnc check FILE` prints a report for each diagnostic on standard error, then one line per
file on standard output:

```text
E0103

  × 64 input channels cannot be split into 5 groups (in `conv1`)
   ╭─[example.cnn:2:27]
 1 │ network Net(input: 64x56x56) {
 2 │     conv(128, 3x3, pad=1, groups=5)
   ·                           ────┬───
   ·                               ╰── 5 groups
 3 │ }
   ╰────
  help: the input channels must be a multiple of `groups`: use 60 or 65 input channels, or a
        `groups` that divides 64
error example.cnn: 1 error(s), 0 warning(s)
```

A report gives the code, the message (`×` for an error, `⚠` for a warning), the source
around the *primary label* (where the problem is) and any secondary labels (where a name
was first used, what each input of a join gives, which block call led to a layer inside a
block), and often a `help:` line with a fix. Shape errors name the layer they concern by
its hierarchical name, e.g. ``(in `layer1.0.conv1`)``. Colours are used when standard error
is a terminal; `NO_COLOR=1` turns them off.

How much is reported:

- A syntax error (`E0001`, and a number literal too large for 64 bits, `E0015`) stops the
  reading of the file: it is the only diagnostic.
- Otherwise every diagnostic is reported in one run, sorted by position.
- A layer whose input could not be computed because of an earlier error is not checked
  itself, so one mistake does not cause a cascade of errors further down the network.
- A mistake inside a block is reported once (once per network, for shape errors), in the
  block, however often the block is called; shape errors add a label on the call that led
  there.

### `--format json`

`cnnc check --format json FILE...` prints one JSON array with every diagnostic of every
file on standard output (and no report or summary line); the exit status is the same.
Lines and columns are 1-based, columns count characters; `start` and `end` are byte
offsets; the primary label comes first in `labels`; `help` is `null` when there is none.

```json
[
  {
    "code": "E0002",
    "column": 5,
    "file": "example.cnn",
    "help": "did you mean `conv`?",
    "labels": [
      {
        "column": 5,
        "end": 38,
        "line": 2,
        "message": "not an op or a block of this file",
        "start": 34
      }
    ],
    "line": 2,
    "message": "unknown layer or block `cnov`",
    "severity": "error"
  }
]
```

The sections below explain each code: what it means, a small file that triggers it, the
report `cnnc check` prints for it, and how to fix it.
'''

S["E0001"] = (r'''
The file does not follow the grammar of [the language](language.md). The message says what
the parser expected at the first place where reading failed and what it found there
(``expected `)` or `,`, found the end of the line``). Parsing stops at the first syntax error,
so it is the only diagnostic of the run.

Frequent causes: an argument list or a `{` left open, a missing comma between arguments,
`pad: 1` instead of `pad=1`, a bare number or a stray character (`→`, `=>`) where a layer
is expected, layers written directly in `concat { }` without `branch { }`, and a misspelled
keyword (`els`). Expressions nested too deeply are refused here too.
''', r'''
Look at the position and at the line before it: a parenthesis or brace left open is
reported where the parser notices, which is often the start of the next line (or the end of
the file, for a `{` never closed). Layers on one line follow each other with spaces only;
`->` names a tensor.
''')

S["E0002"] = (r'''
A layer names something that is neither a built-in op nor a block defined in this file.
Op names are lower case (`relu`, not `Relu`); a block must be defined in the same file,
before or after its use. When a known op or block is close to the name, the help suggests
it.
''', r'''
Correct the spelling, or define the block. The ops and their arguments are listed in
[the language reference](language.md#layers).
''')

S["E0003"] = (r'''
A keyword argument `name=value` names a parameter the op or block does not have. Names from
other frameworks are the usual cause: `padding` (here `pad`), `strides` (`stride`), `rate`
(`dropout`'s `p`), or an argument of another op (`ceil` belongs to the poolings, not to
`conv`). The help suggests the closest parameter, or lists them all.
''', r'''
Use one of the listed names; for a block, the names of its `block Name(...)` definition.
''')

S["E0004"] = (r'''
A required argument is absent: `conv`'s `out` and `kernel`, the poolings' `kernel`,
`dense`'s `units`, or a block parameter without a default. The same code covers the other
things that need something to work on: `concat(...)` or `add(...)` without tensors, a
`concat { }` without branches, a `side` without layers, `min()` or `max()` without values.
''', r'''
Pass the argument, by position (in the order of the table in the language reference) or
by name, or give the block parameter a default (`block B(c, stride=1)`).
''')

S["E0005"] = (r'''
One parameter receives two values: by position and by name (in `conv(64, 3x3, out=32)`,
`64` already is `out`), or twice by name. Positional arguments fill the parameters in
order, so a positional argument after named ones can collide with them too.
''', r'''
Remove one of the two; the labels show both.
''')

S["E0006"] = (r'''
A call has more positional arguments than the op or block has parameters. A decimal
comma (`dropout(0,5)`) makes two arguments; element-wise ops such as `relu` take none
(a slope goes to `leakyrelu(0.1)`).
''', r'''
Remove the extra arguments, or name them to see which parameter each one is meant for;
the help lists the parameters in order.
''')

S["E0007"] = (r'''
A value of the wrong kind: an integer where `true` or `false` goes (`bias=0`), a list of
three as a kernel, a fractional kernel, a boolean as a number. The same code covers the
other places where a kind is required: the operands of `concat(...)` and `add(...)` are
tensor names, a `repeat` count is an integer, an `if` condition is a boolean, `+` and the
other operators need operands they can combine, and a network input is `CxHxW` or a number
of features.
''', r'''
Write a value of the kind the message names: sizes as `3`, `3x3` or `[1, 7]`, padding as
`1`, `1x2`, `[top, left, bottom, right]`, `same` or `valid`, booleans as `true`/`false`.
''')

S["E0008"] = (r'''
A value of the right kind, but out of range: channel and unit counts, `groups` and `lrn`'s
`size` are at least 1; kernels, strides and dilations at least 1 in each dimension; padding
at least 0; no size may exceed 2^32 (4294967296); `dropout`'s `p` is in [0, 1), `bn`'s
`eps` in [0, 1], `lrn`'s `alpha`, `beta` and `k` non-negative; a `repeat` count is between
0 and 100000; every size of a network input between 1 and 2^32. (A count of 0 is
[E0102](#e0102-output-size-not-positive).)
''', r'''
Use a value in the range the message gives.
''')

S["E0009"] = (r'''
An expression uses a name that is not a block parameter, a `let` or a `repeat` index in
scope, or calls a function other than `min` and `max`. A block sees only its own
parameters and `let`s, nothing of its caller. The bare words `same` and `valid` are
accepted only as padding.
''', r'''
Correct the spelling (the help suggests a close name, or lists those in scope), define the
value with `let`, or pass it to the block as a parameter.
''')

S["E0010"] = (r'''
Two layers in one scope have the same hierarchical name, which would name two sets of
weights alike. Automatic names count: the first unnamed `conv` of a scope is `conv1`, the
first `relu` is `relu1`, so a later `conv conv1(...)` collides with it (an explicit name
given first is skipped by the automatic numbering). Named block calls, `concat`s,
`residual`s, `repeat`s, `side`s, `branch`es and `shortcut`s take names in the same scope,
and so do the joins themselves (`concat1`, `add1`).
''', r'''
Rename one of the two. Let the names be automatic, or give explicit names that cannot be
automatic ones (`stem`, `c1`, `layer2`).
''')

S["E0011"] = (r'''
A block calls itself, directly or through other blocks, so expanding it would never end.
The message shows the cycle, and the labels each call on the way. Block calls nested more
than 64 deep are refused with the same code.
''', r'''
Stack a block with `repeat N { Block(...) }` instead of having it call itself, and break
cycles between blocks.
''')

S["E0012"] = (r'''
Two networks or blocks have the same name (networks and blocks share one namespace), or a
block has the name of a built-in op. Calls use the first definition of a block.
''', r'''
Rename one of them; blocks are conventionally capitalized (`Stage`, `Fire`), which also
keeps them apart from the ops.
''')

S["E0013"] = (r'''
A block's parameter list declares the same name twice.
''', r'''
Rename or remove one of the two parameters.
''')

S["E0014"] = (r'''
`from NAME`, `concat(...)` or `add(...)` name a tensor that no `-> NAME` before them made
visible. A name made inside a `branch`, `residual`, `shortcut`, `side`, `repeat` or `if`
body is visible only in that body, and a block sees none of its caller's tensors, only
the tensor it is called on. The help suggests a close name or lists those in scope. (In
this example `skip` is then also reported as unused,
[W0003](#w0003-unused-tensor-name); that report is left out.)
''', r'''
Correct the name, or name the tensor in a scope that encloses its use.
''', "E0014")

S["E0015"] = (r'''
Integer arithmetic is checked: a result that overflows a 64-bit integer, a division or
remainder by zero, or a floating-point expression with no finite value is an error. A
number literal too large for 64 bits is refused when the file is read, like a syntax
error.
''', r'''
Check the expression with the values it is evaluated with; in a block, the arguments of
the call. Guard divisions with a condition (`k > 3 ? 8 / (k - 3) : 1`).
''')

S["E0016"] = (r'''
The file defines no `network`. Blocks are only checked where a network uses them, so a
file of blocks alone checks nothing; each of its blocks is also reported unused
([W0002](#w0002-unused-block)).
''', r'''
Add a network that uses the blocks: `network Name(input: 3x224x224) { ... }`.
''')

S["E0017"] = (r'''
Once blocks and `repeat`s are expanded, the network has more than 1,000,000 layers. Each
`repeat` count is limited (to 100000, [E0008](#e0008-argument-value-out-of-range)), but
nested `repeat`s multiply. No real network comes close to the limit.
''', r'''
Check the `repeat` counts, in particular of nested `repeat`s and of `repeat`s in blocks
called from `repeat`s.
''')

S["E0101"] = (r'''
A convolution's or pooling's kernel is larger than its input plus padding, in height or in
width, so not even one window fits. With dilation the kernel spans `dilation * (k - 1) +
1` pixels, which the message gives. The usual cause is an input smaller than the
architecture expects, or more downsampling before the layer than intended: LeNet-5's C5
expects the 5x5 maps of a 32x32 input, and meets 4x4 maps on 28x28 MNIST digits.
''', r'''
Pad the layer (`pad=1` keeps a 3x3 convolution's size), use a smaller kernel or dilation,
downsample less before it, or declare the input size the network was designed for.
''')

S["E0102"] = (r'''
A layer's output would have no elements: `conv` with `out` 0, `dense` with `units` 0, or a
network input with a size of 0.
''', r'''
Use a count of at least 1.
''')

S["E0103"] = (r'''
A grouped convolution splits its input channels and its output channels into `groups`
equal parts, so `groups` must divide both. The message says which of the two does not
divide.
''', r'''
Choose a `groups` that divides both channel counts (a depthwise convolution has `groups`
equal to its input channels and a multiple of them as outputs), or change the channel
counts.
''')

S["E0104"] = (r'''
`concat` joins tensors along the channels, so their heights and widths must agree. The
labels show what each input gives. Usually one branch pads or strides differently from the
others, or a named tensor is joined to one of another resolution.
''', r'''
Make the sizes agree: pad the branch that shrinks (`pad=1` for a 3x3 convolution, `pad=2`
for a 5x5), use the same strides in every branch, or resize before joining.
''')

S["E0105"] = (r'''
A `residual` adds its shortcut (the identity, unless a `shortcut { }` is given) to its main
path, and `add(...)` adds named tensors: the shapes must be equal. The labels show what
each side gives. With an identity shortcut, the help gives the projection that would fit.
''', r'''
When the main path changes the channels or the resolution, give the shortcut a projection
with the same output channels and stride (`shortcut { conv(128, 1x1, stride=2) bn }`); when
the shortcut is already a projection, fix its channels or stride.
''')

S["E0106"] = (r'''
`dense` is fully connected: it needs a vector of features, and its input is still an image
of shape `CxHxW` (a global pooling gives `Cx1x1`, still not a vector).
''', r'''
Insert `flatten` before the first `dense` (the help gives the number of features it would
give), or `globalavgpool flatten` to keep only the channels.
''')

S["E0107"] = (r'''
A layer gets a tensor of a rank it cannot work on: convolutions, poolings, global
poolings and `lrn` need a `CxHxW` image, and got a vector, either after `flatten` or
`dense`, or from an input declared as a number of features (`input: 784`).
''', r'''
Declare image inputs as `CxHxW` (`input: 1x28x28`), and keep the image layers before
`flatten`.
''')

S["E0108"] = (r'''
A size, a parameter count or a multiply-accumulate count overflows 64 bits. Each size is
limited to 2^32, but their products are not: a dense layer of 2^32 units on 2^32 flattened
features has 2^64 weights; a network input's element count can overflow too.
''', r'''
Check the sizes the message points to and those before it: they are far beyond any real
network, often a typo in an input size or a unit count.
''')

S["E0109"] = (r'''
A pooling's padding on some side is more than half its (dilated) kernel, so a window could
cover nothing but padding; PyTorch and ONNX refuse it. `pad=same` computes its own padding
and is not concerned.
''', r'''
Reduce the padding to at most half the kernel (`pad=1` for a 3x3 pooling), or enlarge the
kernel.
''')

S["W0001"] = (r'''
The windows of a strided convolution or pooling stop before the end of the input: with
kernel `k`, stride `s`, and input plus padding `n`, the last `(n - k) % s` rows (or
columns) are never read. The classic case is AlexNet at the 224x224 input the paper
states: its 11x11, stride-4 first convolution covers 227x227 exactly. The warning is given
when those rows are input rather than end padding, only when the kernel is at least the
stride (a 1x1 convolution with stride 2 skips pixels by design), and not with `ceil=true`.
''', r'''
If the edge matters, use the input size the help gives (227 for AlexNet), pad the input,
or use `ceil=true` for a pooling. If it does not, the warning can be left.
''')

S["W0002"] = (r'''
No network calls the block, directly or through other blocks. Blocks are checked only
where they are used, so its body has not been checked at all.
''', r'''
Call it from a network, or remove it.
''')

S["W0003"] = (r'''
A tensor named with `-> name` is never read by `from`, `concat(...)` or `add(...)` in the
body that names it. Usually a skip connection that was meant to be joined later.
''', r'''
Use the tensor, or remove the `-> name`.
''')
