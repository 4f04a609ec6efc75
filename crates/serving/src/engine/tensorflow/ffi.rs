//! Every call into TensorFlow's C API (tensorflow/c/c_api.h, tf_tensor.h, tf_tstring.h, env.h
//! of the tensorflow-cpu wheel), behind safe wrappers that own what they create. The library is
//! opened once per process and never closed: TensorFlow registers kernels, filesystems and
//! threads at load time that outlive any handle.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use teeserve_tensor::Tensor;

/// `TF_Buffer` (tf_buffer.h).
#[repr(C)]
struct TfBuffer {
    data: *const c_void,
    length: usize,
    #[allow(dead_code)] // set by TensorFlow, called by TF_DeleteBuffer
    data_deallocator: Option<unsafe extern "C" fn(*mut c_void, usize)>,
}

/// `TF_Output` (c_api.h): an operation's output in a graph.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct TfOutput {
    oper: *mut c_void,
    index: c_int,
}

// SAFETY: a TF_Output names an operation of a graph owned by a `Session`; it is only passed
// back to that session's TF_SessionRun, and TF_Graph is internally synchronised.
unsafe impl Send for TfOutput {}
// SAFETY: as above; it is never dereferenced on this side.
unsafe impl Sync for TfOutput {}

/// `TF_TString` (tsl/platform/ctstring_internal.h): 24 bytes, handled only through the
/// library's `TF_String*` functions.
#[repr(C, align(8))]
struct TfTString([u8; 24]);

const TSTRING_BYTES: usize = std::mem::size_of::<TfTString>();

type P = *mut c_void;

macro_rules! api {
    ($($name:ident : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The C API functions teeserve calls, resolved once from the library.
        #[allow(non_snake_case)]
        struct Api { $($name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)* }

        impl Api {
            fn resolve(lib: &libloading::Library) -> Result<Self, String> {
                Ok(Self { $($name: {
                    // SAFETY: the symbol is declared with the C signature of the TensorFlow
                    // header that defines it (tensorflow/c/*.h of the same wheel).
                    let f = unsafe {
                        lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                    }
                    .map_err(|e| format!("{}: {e}", stringify!($name)))?;
                    *f
                },)* })
            }
        }
    };
}

api! {
    TF_Version: fn() -> *const c_char;
    TF_NewStatus: fn() -> P;
    TF_DeleteStatus: fn(P);
    TF_GetCode: fn(P) -> c_int;
    TF_Message: fn(P) -> *const c_char;
    TF_NewGraph: fn() -> P;
    TF_DeleteGraph: fn(P);
    TF_NewSessionOptions: fn() -> P;
    TF_DeleteSessionOptions: fn(P);
    TF_SetConfig: fn(P, *const c_void, usize, P);
    TF_NewBuffer: fn() -> *mut TfBuffer;
    TF_DeleteBuffer: fn(*mut TfBuffer);
    TF_LoadSessionFromSavedModel: fn(P, *const TfBuffer, *const c_char, *const *const c_char, c_int, P, *mut TfBuffer, P) -> P;
    TF_CloseSession: fn(P, P);
    TF_DeleteSession: fn(P, P);
    TF_GraphOperationByName: fn(P, *const c_char) -> P;
    TF_OperationNumOutputs: fn(P) -> c_int;
    TF_SessionRun: fn(P, *const TfBuffer, *const TfOutput, *const P, c_int, *const TfOutput, *mut P, c_int, *const P, c_int, *mut TfBuffer, P);
    TF_AllocateTensor: fn(c_int, *const i64, c_int, usize) -> P;
    TF_DeleteTensor: fn(P);
    TF_TensorData: fn(P) -> *mut c_void;
    TF_TensorByteSize: fn(P) -> usize;
    TF_TensorType: fn(P) -> c_int;
    TF_NumDims: fn(P) -> c_int;
    TF_Dim: fn(P, c_int) -> i64;
    TF_StringInit: fn(*mut TfTString);
    TF_StringCopy: fn(*mut TfTString, *const c_char, usize);
    TF_StringGetDataPointer: fn(*const TfTString) -> *const c_char;
    TF_StringGetSize: fn(*const TfTString) -> usize;
    TF_StringDealloc: fn(*mut TfTString);
    TF_NewWritableFile: fn(*const c_char, *mut P, P);
    TF_AppendWritableFile: fn(P, *const c_char, usize, P);
    TF_CloseWritableFile: fn(P, P);
    TF_CreateDir: fn(*const c_char, P);
    TF_DeleteRecursively: fn(*const c_char, *mut i64, *mut i64, P);
}

/// The TensorFlow library of this process.
pub(super) struct Library {
    api: Api,
    /// The file it was loaded from.
    pub(super) path: PathBuf,
    /// `TF_Version()`.
    pub(super) version: String,
}

impl std::fmt::Debug for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TensorFlow {} ({})", self.version, self.path.display())
    }
}

static LOADED: OnceLock<Library> = OnceLock::new();

impl Library {
    /// Opens the library at `path` (once per process; a second call must name the same file).
    pub(super) fn open(path: &Path) -> Result<&'static Library, String> {
        let path = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(l) = LOADED.get() {
            return if l.path == path {
                Ok(l)
            } else {
                Err(format!(
                    "TensorFlow is already loaded from {} in this process",
                    l.path.display()
                ))
            };
        }
        // SAFETY: loading TensorFlow runs its static initialisers (op and kernel registration),
        // which have no preconditions on the caller; the handle is kept for the life of the
        // process (below), so no function pointer outlives the code it points to.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| e.to_string())?;
        let api = Api::resolve(&lib)?;
        // Never unloaded: TensorFlow's registries and thread pools live as long as the process.
        std::mem::forget(lib);
        // SAFETY: TF_Version takes nothing and returns a static NUL-terminated string.
        let version = unsafe { CStr::from_ptr((api.TF_Version)()) }
            .to_string_lossy()
            .into_owned();
        let _ = LOADED.set(Library { api, path, version });
        LOADED
            .get()
            .ok_or_else(|| "TensorFlow library state lost".into())
    }

    fn status(&'static self) -> Status {
        // SAFETY: TF_NewStatus has no preconditions; Status deletes it once.
        Status {
            lib: self,
            ptr: unsafe { (self.api.TF_NewStatus)() },
        }
    }

    /// Creates directory `dir` in TensorFlow's file systems (e.g. `ram://`).
    pub(super) fn create_dir(&'static self, dir: &str) -> Result<(), String> {
        let c = cstring(dir)?;
        let s = self.status();
        // SAFETY: `c` is a NUL-terminated path alive for the call; `s` is a live status.
        unsafe { (self.api.TF_CreateDir)(c.as_ptr(), s.ptr) };
        s.check()
    }

    /// Writes `bytes` as file `path` in TensorFlow's file systems.
    pub(super) fn write_file(&'static self, path: &str, bytes: &[u8]) -> Result<(), String> {
        let c = cstring(path)?;
        let s = self.status();
        let mut handle: P = std::ptr::null_mut();
        // SAFETY: `c` is a NUL-terminated path, `handle` a valid out-pointer, `s` a live status.
        unsafe { (self.api.TF_NewWritableFile)(c.as_ptr(), &mut handle, s.ptr) };
        s.check()?;
        if handle.is_null() {
            return Err(format!("{path}: TensorFlow gave no file handle"));
        }
        let mut appended = Ok(());
        for chunk in bytes.chunks(64 << 20) {
            // SAFETY: `handle` is the open file created above; `chunk` is valid for its length.
            unsafe {
                (self.api.TF_AppendWritableFile)(handle, chunk.as_ptr().cast(), chunk.len(), s.ptr)
            };
            appended = s.check();
            if appended.is_err() {
                break;
            }
        }
        let closed = self.status();
        // SAFETY: `handle` is open and is closed (and freed) exactly once, here.
        unsafe { (self.api.TF_CloseWritableFile)(handle, closed.ptr) };
        appended.and(closed.check())
    }

    /// Deletes `dir` and everything under it.
    pub(super) fn delete_recursively(&'static self, dir: &str) -> Result<(), String> {
        let c = cstring(dir)?;
        let s = self.status();
        let (mut files, mut dirs) = (0i64, 0i64);
        // SAFETY: `c` is a NUL-terminated path; the counters and status are valid pointers.
        unsafe { (self.api.TF_DeleteRecursively)(c.as_ptr(), &mut files, &mut dirs, s.ptr) };
        s.check()?;
        if files != 0 || dirs != 0 {
            return Err(format!(
                "{dir}: {files} files and {dirs} directories could not be deleted"
            ));
        }
        Ok(())
    }
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// A `TF_Status`.
struct Status {
    lib: &'static Library,
    ptr: P,
}

impl Status {
    fn check(&self) -> Result<(), String> {
        // SAFETY: `ptr` is a live status created by TF_NewStatus.
        let code = unsafe { (self.lib.api.TF_GetCode)(self.ptr) };
        if code == 0 {
            return Ok(());
        }
        // SAFETY: TF_Message returns a NUL-terminated string owned by the live status.
        let msg = unsafe { CStr::from_ptr((self.lib.api.TF_Message)(self.ptr)) };
        Err(msg.to_string_lossy().into_owned())
    }
}

impl Drop for Status {
    fn drop(&mut self) {
        // SAFETY: created by TF_NewStatus and deleted once.
        unsafe { (self.lib.api.TF_DeleteStatus)(self.ptr) }
    }
}

/// A loaded SavedModel: its graph and the session that runs it. TensorFlow sessions are thread
/// safe (`TF_SessionRun` may be called concurrently), so one is shared by every request.
pub(super) struct Session {
    lib: &'static Library,
    graph: P,
    session: P,
}

// SAFETY: TF_Session and TF_Graph are internally synchronised (c_api.h: "the Session is
// thread-safe"); nothing here mutates them outside of TensorFlow's own locking.
unsafe impl Send for Session {}
// SAFETY: as above; `run` takes `&self` and TensorFlow serialises what needs serialising.
unsafe impl Sync for Session {}

/// What an input tensor holds.
#[derive(Clone, Copy)]
pub(super) enum Contents<'a> {
    /// Fixed-size elements, written little-endian in row-major order straight into the
    /// tensor TensorFlow allocates.
    Values(&'a Tensor),
    /// DT_STRING elements.
    Strings(&'a [Vec<u8>]),
}

/// An output read back from TensorFlow.
pub(super) struct OutTensor {
    /// TF_DataType.
    pub(super) dtype: i32,
    /// Dimensions.
    pub(super) shape: Vec<usize>,
    /// Fixed-size elements (not for strings).
    pub(super) bytes: Vec<u8>,
    /// DT_STRING elements.
    pub(super) strings: Vec<Vec<u8>>,
}

/// TF_STRING.
pub(super) const TF_STRING: i32 = 7;

/// An owned `TF_Tensor`; string elements it was filled with are freed with it.
struct Owned {
    lib: &'static Library,
    ptr: P,
    strings: usize,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if self.strings > 0 {
            // SAFETY: the first `strings` elements were initialised with TF_StringInit and
            // TF_StringCopy by `Session::tensor`; each is freed once, then the tensor.
            unsafe {
                let base = (self.lib.api.TF_TensorData)(self.ptr).cast::<TfTString>();
                for i in 0..self.strings {
                    (self.lib.api.TF_StringDealloc)(base.add(i));
                }
            }
        }
        // SAFETY: a tensor this wrapper owns, deleted once.
        unsafe { (self.lib.api.TF_DeleteTensor)(self.ptr) }
    }
}

impl Session {
    /// Loads the SavedModel in `dir` (a path or a `ram://` URL) with `tags`, with
    /// `config` (a serialized ConfigProto) as the session's options. Gives the session and the
    /// serialized MetaGraphDef.
    pub(super) fn load(
        lib: &'static Library,
        dir: &str,
        tags: &[String],
        config: &[u8],
    ) -> Result<(Session, Vec<u8>), String> {
        let dir_c = cstring(dir)?;
        let tags_c = tags
            .iter()
            .map(|t| cstring(t))
            .collect::<Result<Vec<_>, _>>()?;
        let tag_ptrs: Vec<*const c_char> = tags_c.iter().map(|t| t.as_ptr()).collect();
        let api = &lib.api;
        let s = lib.status();
        // SAFETY: every pointer passed is live for the call; objects created here are deleted
        // below or owned by the returned Session.
        unsafe {
            let opts = (api.TF_NewSessionOptions)();
            (api.TF_SetConfig)(opts, config.as_ptr().cast(), config.len(), s.ptr);
            if let Err(e) = s.check() {
                (api.TF_DeleteSessionOptions)(opts);
                return Err(format!("session options: {e}"));
            }
            let graph = (api.TF_NewGraph)();
            let meta = (api.TF_NewBuffer)();
            let session = (api.TF_LoadSessionFromSavedModel)(
                opts,
                std::ptr::null(),
                dir_c.as_ptr(),
                tag_ptrs.as_ptr(),
                tag_ptrs.len() as c_int,
                graph,
                meta,
                s.ptr,
            );
            (api.TF_DeleteSessionOptions)(opts);
            let loaded = s.check();
            let meta_bytes = if (*meta).data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts((*meta).data.cast::<u8>(), (*meta).length).to_vec()
            };
            (api.TF_DeleteBuffer)(meta);
            if let Err(e) = loaded {
                if !session.is_null() {
                    (api.TF_DeleteSession)(session, s.ptr);
                }
                (api.TF_DeleteGraph)(graph);
                return Err(e);
            }
            Ok((
                Session {
                    lib,
                    graph,
                    session,
                },
                meta_bytes,
            ))
        }
    }

    /// Resolves a TensorInfo name (`op:index`, or `op` for index 0) in the graph.
    pub(super) fn output(&self, name: &str) -> Result<TfOutput, String> {
        let (op, index) = match name.rsplit_once(':') {
            Some((op, i)) => (
                op,
                i.parse::<c_int>()
                    .map_err(|_| format!("tensor name {name:?}"))?,
            ),
            None => (name, 0),
        };
        let c = cstring(op)?;
        // SAFETY: the graph is live while self is; `c` is NUL-terminated.
        let oper = unsafe { (self.lib.api.TF_GraphOperationByName)(self.graph, c.as_ptr()) };
        if oper.is_null() {
            return Err(format!("the graph has no operation {op:?}"));
        }
        // SAFETY: `oper` is an operation of the live graph.
        let n = unsafe { (self.lib.api.TF_OperationNumOutputs)(oper) };
        if index < 0 || index >= n {
            return Err(format!("operation {op:?} has no output {index}"));
        }
        Ok(TfOutput { oper, index })
    }

    /// A new TF_Tensor of `dtype` and `shape` holding `contents`.
    fn tensor(&self, dtype: i32, shape: &[usize], contents: Contents<'_>) -> Result<Owned, String> {
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let n: usize = shape.iter().product();
        let len = match &contents {
            Contents::Values(t) => t.le_byte_len(),
            Contents::Strings(s) => {
                if s.len() != n {
                    return Err(format!("{} strings for shape {shape:?}", s.len()));
                }
                n.checked_mul(TSTRING_BYTES).ok_or("too many strings")?
            }
        };
        // SAFETY: dims is valid for its length; TensorFlow allocates `len` bytes.
        let ptr = unsafe {
            (self.lib.api.TF_AllocateTensor)(dtype, dims.as_ptr(), dims.len() as c_int, len)
        };
        if ptr.is_null() {
            return Err(format!("TensorFlow could not allocate {len} bytes"));
        }
        let mut owned = Owned {
            lib: self.lib,
            ptr,
            strings: 0,
        };
        // SAFETY: the tensor's buffer is `len` bytes long (TF_TensorByteSize checks it), and
        // only written within that length; TF_TStrings are initialised before use.
        unsafe {
            let data = (self.lib.api.TF_TensorData)(ptr);
            if len > 0 && (data.is_null() || (self.lib.api.TF_TensorByteSize)(ptr) < len) {
                return Err("TensorFlow allocated a smaller tensor than asked".into());
            }
            match contents {
                Contents::Values(t) => {
                    if len > 0 {
                        t.write_le_bytes(std::slice::from_raw_parts_mut(data.cast::<u8>(), len))
                    }
                }
                Contents::Strings(s) => {
                    let base = data.cast::<TfTString>();
                    for (i, v) in s.iter().enumerate() {
                        (self.lib.api.TF_StringInit)(base.add(i));
                        owned.strings = i + 1;
                        (self.lib.api.TF_StringCopy)(base.add(i), v.as_ptr().cast(), v.len());
                    }
                }
            }
        }
        Ok(owned)
    }

    /// Runs the graph: feeds `inputs` (output, dtype, shape, contents) and fetches `fetches`,
    /// whose copies out of TensorFlow may take `max_bytes` in all.
    pub(super) fn run(
        &self,
        inputs: &[(TfOutput, i32, &[usize], Contents<'_>)],
        fetches: &[TfOutput],
        max_bytes: usize,
    ) -> Result<Vec<OutTensor>, RunFailure> {
        let owned = inputs
            .iter()
            .map(|(_, dtype, shape, c)| self.tensor(*dtype, shape, *c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RunFailure::Failed)?;
        let feeds: Vec<TfOutput> = inputs.iter().map(|i| i.0).collect();
        let values: Vec<P> = owned.iter().map(|o| o.ptr).collect();
        let mut out: Vec<P> = vec![std::ptr::null_mut(); fetches.len()];
        let s = self.lib.status();
        // SAFETY: feeds/values/fetches/out are valid arrays of the lengths given; the session
        // and the operations in the TF_Outputs belong to this live graph. The input tensors
        // stay owned by `owned` (TF_SessionRun does not take ownership of them).
        unsafe {
            (self.lib.api.TF_SessionRun)(
                self.session,
                std::ptr::null(),
                feeds.as_ptr(),
                values.as_ptr(),
                feeds.len() as c_int,
                fetches.as_ptr(),
                out.as_mut_ptr(),
                fetches.len() as c_int,
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
                s.ptr,
            )
        };
        // Outputs are owned from here on, whatever happens next.
        let outs: Vec<Owned> = out
            .into_iter()
            .filter(|p| !p.is_null())
            .map(|ptr| Owned {
                lib: self.lib,
                ptr,
                strings: 0,
            })
            .collect();
        s.check().map_err(RunFailure::Failed)?;
        drop(owned);
        if outs.len() != fetches.len() {
            return Err(RunFailure::Failed(
                "TensorFlow returned fewer outputs than fetched".into(),
            ));
        }
        let mut total = 0usize;
        outs.iter()
            .enumerate()
            .map(|(output, o)| {
                let t = self
                    .read(o, max_bytes.saturating_sub(total))
                    .map_err(|e| match e {
                        ReadFailure::Other(detail) => RunFailure::Failed(detail),
                        ReadFailure::TooLarge(bytes) => RunFailure::TooLarge {
                            output,
                            bytes: bytes.saturating_add(total as u128),
                        },
                    })?;
                total = total
                    .saturating_add(t.bytes.len())
                    .saturating_add(t.strings.iter().map(Vec::len).sum());
                Ok(t)
            })
            .collect()
    }

    fn read(&self, o: &Owned, max_bytes: usize) -> Result<OutTensor, ReadFailure> {
        let api = &self.lib.api;
        // SAFETY: `o.ptr` is a live output tensor; its data is TF_TensorByteSize bytes long,
        // and for TF_STRING holds `elements` initialised TF_TStrings.
        unsafe {
            let dtype = (api.TF_TensorType)(o.ptr);
            let rank = (api.TF_NumDims)(o.ptr);
            let shape = (0..rank)
                .map(|i| {
                    usize::try_from((api.TF_Dim)(o.ptr, i))
                        .map_err(|_| ReadFailure::Other("negative dimension".to_owned()))
                })
                .collect::<Result<Vec<usize>, _>>()?;
            let elements = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or(ReadFailure::TooLarge(u128::MAX))?;
            let data = (api.TF_TensorData)(o.ptr);
            let size = (api.TF_TensorByteSize)(o.ptr);
            if size > max_bytes {
                return Err(ReadFailure::TooLarge(size as u128));
            }
            let mut t = OutTensor {
                dtype,
                shape,
                bytes: Vec::new(),
                strings: Vec::new(),
            };
            if size == 0 || data.is_null() {
                return Ok(t);
            }
            if dtype == TF_STRING {
                if elements.checked_mul(TSTRING_BYTES) != Some(size) {
                    return Err(ReadFailure::Other(format!(
                        "string output of {size} bytes for {elements} elements"
                    )));
                }
                let base = data.cast::<TfTString>().cast_const();
                let mut total = 0usize;
                for i in 0..elements {
                    let e = base.add(i);
                    let len = (api.TF_StringGetSize)(e);
                    total = total.saturating_add(len);
                    if total > max_bytes {
                        return Err(ReadFailure::TooLarge(total as u128));
                    }
                    let p = (api.TF_StringGetDataPointer)(e);
                    t.strings.push(if len == 0 || p.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec()
                    });
                }
            } else {
                t.bytes = std::slice::from_raw_parts(data.cast::<u8>(), size).to_vec();
            }
            Ok(t)
        }
    }
}

/// Why a run gave no outputs.
pub(super) enum RunFailure {
    /// TensorFlow's message, or an output it made that cannot be read.
    Failed(String),
    /// Output `output` (an index into the fetches) took the outputs to at least `bytes`, past
    /// the bound the run was given.
    TooLarge { output: usize, bytes: u128 },
}

/// Why one output could not be copied out.
enum ReadFailure {
    Other(String),
    /// Its bytes, past the room left.
    TooLarge(u128),
}

impl Drop for Session {
    fn drop(&mut self) {
        let s = self.lib.status();
        // SAFETY: the session and graph are owned by this value and deleted once, the session
        // first (it refers to the graph).
        unsafe {
            (self.lib.api.TF_CloseSession)(self.session, s.ptr);
            (self.lib.api.TF_DeleteSession)(self.session, s.ptr);
            (self.lib.api.TF_DeleteGraph)(self.graph);
        }
    }
}
