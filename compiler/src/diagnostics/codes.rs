//! Every diagnostic code, with the one-line title that `docs/errors.md` explains.

use serde::Serialize;

macro_rules! codes {
    ($($variant:ident = $code:literal, $title:literal;)*) => {
        /// A diagnostic's stable code; each one has a section in `docs/errors.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code,)* }
            }

            pub fn title(self) -> &'static str {
                match self { $(Code::$variant => $title,)* }
            }
        }
    };
}

codes! {
    Syntax = "E0001", "syntax error";
    UnknownOp = "E0002", "unknown layer or block";
    UnknownArgument = "E0003", "unknown argument";
    MissingArgument = "E0004", "missing argument";
    DuplicateArgument = "E0005", "argument given twice";
    TooManyArguments = "E0006", "too many positional arguments";
    ArgumentType = "E0007", "argument of the wrong type";
    ArgumentValue = "E0008", "argument value out of range";
    UnknownName = "E0009", "unknown name in an expression";
    DuplicateLayerName = "E0010", "two layers with the same name";
    RecursiveBlock = "E0011", "block that calls itself";
    DuplicateDefinition = "E0012", "network or block defined twice";
    DuplicateParameter = "E0013", "block parameter declared twice";
    UnknownTensor = "E0014", "unknown tensor name";
    Arithmetic = "E0015", "overflow or division by zero in an expression";
    NoNetwork = "E0016", "no network in the file";
    TooLarge = "E0017", "network too large";
    KernelTooLarge = "E0101", "kernel larger than the padded input";
    EmptyOutput = "E0102", "output size not positive";
    GroupsMismatch = "E0103", "channels not divisible by groups";
    ConcatMismatch = "E0104", "concatenated tensors differ in height or width";
    ResidualMismatch = "E0105", "added tensors differ in shape";
    DenseUnflattened = "E0106", "dense layer on an unflattened tensor";
    WrongRank = "E0107", "layer applied to a tensor of the wrong rank";
    SizeOverflow = "E0108", "size overflow";
    PoolPadding = "E0109", "pooling padding larger than half the kernel";
    StrideDropsPixels = "W0001", "stride drops input pixels";
    UnusedBlock = "W0002", "unused block";
    UnusedTensor = "W0003", "unused tensor name";
}
