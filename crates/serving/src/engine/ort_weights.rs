//! One copy of a model's weights under two ONNX Runtime sessions.
//!
//! ONNX Runtime fixes a session's intra-op thread count when the session is made, so running a
//! lone inference on every worker's thread and inferences beside others on one thread each takes
//! two sessions, and each session holds its own copy of the weights (measured in
//! docs/BENCHMARKS.md, "Two sessions per model, measured"). Here the weights leave both sessions:
//!
//! 1. The model is loaded once as usual (every optimisation, the weights rewritten into the
//!    machine's blocked layout), and ONNX Runtime saves the model as it optimised it, with every
//!    initializer of 1 KiB or more written to a separate weights file (its session options
//!    `session.optimized_model_external_initializers_file_name` and `..._min_size_in_bytes`).
//!    Both files are anonymous memory files ([`Scratch`]: `memfd_create`), never a path of the
//!    host's file system.
//! 2. `onnx_light::light_model` turns each of those initializers into a graph input of the
//!    same name, type and shape: the model left holds no weights.
//! 3. Both sessions load the light model with optimisations off (it is already optimised), and
//!    every `Run` passes the weights as those inputs: tensors over the one mapping of the weights
//!    file ([`Weights`]), which ONNX Runtime reads in place.
//!
//! The process's peak RSS is the first load's: the weights file is written while the first
//! session is alive, but into memory the process has not mapped, so for that moment the machine
//! holds the weights once more than the process's RSS shows. Afterwards the weights are in
//! memory once.

use std::ffi::{c_void, CString};
use std::fs::File;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::ptr::NonNull;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::AsPointer as _;

use super::onnx_light::Weight;
use zeroize::Zeroizing;

/// ONNX Runtime writes initializers of at least this many bytes to the weights file; smaller
/// ones stay in the model.
pub(super) const MIN_EXTERNAL_BYTES: usize = 1024;

/// The two anonymous files ONNX Runtime writes the optimised model and its weights to.
pub(super) struct Scratch {
    model: OwnedFd,
    weights: OwnedFd,
}

#[allow(unsafe_code)]
fn memfd(name: &std::ffi::CStr) -> std::io::Result<OwnedFd> {
    // SAFETY: `memfd_create` takes a NUL-terminated name and flags; a non-negative result is a
    // new file descriptor that nothing else owns.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened above and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Scratch {
    /// Two empty anonymous memory files; an error where the system has none (Gramine, for one).
    pub(super) fn new() -> std::io::Result<Self> {
        Ok(Self {
            model: memfd(c"teeserve-onnxruntime-model")?,
            weights: memfd(c"teeserve-onnxruntime-weights")?,
        })
    }

    /// The path ONNX Runtime writes the optimised model to.
    pub(super) fn model_path(&self) -> String {
        format!("/proc/self/fd/{}", self.model.as_raw_fd())
    }

    /// The weights file's name, which ONNX Runtime takes relative to the model's directory
    /// (`/proc/self/fd/`): the weights file's descriptor number.
    pub(super) fn weights_name(&self) -> String {
        self.weights.as_raw_fd().to_string()
    }

    /// The optimised model as written, and its weights mapped.
    pub(super) fn take(self) -> Result<(Zeroizing<Vec<u8>>, Weights), String> {
        let mut file = File::from(self.model);
        // Sized once, so that no growing copy of the model is left unzeroed in freed memory.
        let len = file
            .metadata()
            .map_err(|e| format!("the optimised model: {e}"))?
            .len();
        let len =
            usize::try_from(len).map_err(|_| "the optimised model is too large".to_owned())?;
        let mut model = Zeroizing::new(Vec::with_capacity(len));
        // Read from the start: ONNX Runtime wrote through another descriptor of the same file.
        std::io::Seek::rewind(&mut file).map_err(|e| format!("the optimised model: {e}"))?;
        file.read_to_end(&mut model)
            .map_err(|e| format!("the optimised model: {e}"))?;
        Ok((model, Weights::map(self.weights)?))
    }
}

/// The weights file, mapped: the one copy of the weights that the sessions read.
pub(super) struct Weights {
    base: NonNull<c_void>,
    len: usize,
}

// SAFETY: the mapping is plain memory that nothing writes while the sessions live (ONNX
// Runtime only reads its inputs); it is unmapped once, by `Drop`.
#[allow(unsafe_code)]
unsafe impl Send for Weights {}
// SAFETY: as above: shared reads of memory nobody writes.
#[allow(unsafe_code)]
unsafe impl Sync for Weights {}

impl Weights {
    #[allow(unsafe_code)]
    fn map(fd: OwnedFd) -> Result<Self, String> {
        let file = File::from(fd);
        let len = file
            .metadata()
            .map_err(|e| format!("the weights file: {e}"))?
            .len();
        let len = usize::try_from(len).map_err(|_| "the weights file is too large".to_owned())?;
        if len == 0 {
            return Ok(Self {
                base: NonNull::dangling(),
                len: 0,
            });
        }
        // SAFETY: a new shared mapping of the whole file, readable and writable (written only
        // by `Drop`, to zero the weights). The descriptor may close after: the mapping keeps
        // the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "cannot map the weights file: {}",
                std::io::Error::last_os_error()
            ));
        }
        let base = NonNull::new(p).ok_or_else(|| "the weights mapped at 0".to_owned())?;
        Ok(Self { base, len })
    }

    /// The weights file's length.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Bytes `offset..offset + len` of the weights, checked to lie inside the file.
    fn at(&self, offset: usize, len: usize) -> Option<*mut c_void> {
        let end = offset.checked_add(len)?;
        (end <= self.len && len > 0)
            .then(|| self.base.as_ptr().cast::<u8>().wrapping_add(offset).cast())
    }
}

impl Drop for Weights {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: the mapping is `len` bytes, readable and writable, and nothing reads it any
        // more: the sessions and the tensors over it are dropped before it (field order of
        // `TwoSessions`). Zeroed so that the model's weights do not outlive it in freed pages.
        unsafe {
            std::ptr::write_bytes(self.base.as_ptr().cast::<u8>(), 0, self.len);
            libc::munmap(self.base.as_ptr(), self.len);
        }
    }
}

fn ort_type(data_type: i32) -> Option<ort::sys::ONNXTensorElementDataType> {
    use ort::sys::ONNXTensorElementDataType as T;
    Some(match data_type {
        1 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
        2 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8,
        3 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8,
        4 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16,
        5 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16,
        6 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
        7 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64,
        9 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL,
        10 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16,
        11 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE,
        12 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32,
        13 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64,
        14 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX64,
        15 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_COMPLEX128,
        16 => T::ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16,
        _ => return None,
    })
}

/// The weights as the tensors each `Run` passes, over the mapping.
pub(super) struct WeightInputs {
    /// The inputs' names, in the order of `values`.
    pub(super) names: Vec<CString>,
    pub(super) values: Vec<Tensor>,
}

/// A tensor of ONNX Runtime's over memory it does not own, released on drop.
pub(super) struct Tensor(NonNull<ort::sys::OrtValue>);

// SAFETY: an `OrtValue` over plain memory; ONNX Runtime only reads an input value, and `Run`
// takes its inputs as `const OrtValue*` from any number of threads at once.
#[allow(unsafe_code)]
unsafe impl Send for Tensor {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Tensor {}

impl Tensor {
    /// The value, as `Run` takes its inputs.
    pub(super) fn ptr(&self) -> *const ort::sys::OrtValue {
        self.0.as_ptr()
    }
}

impl Drop for Tensor {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the value was made by `CreateTensorWithDataAsOrtValue` and is released once;
        // releasing it does not free the memory it describes.
        unsafe { (ort::api().ReleaseValue)(self.0.as_ptr()) };
    }
}

impl WeightInputs {
    /// Tensors over `weights` for each of `list`. They borrow the mapping: the caller keeps
    /// `weights` alive and unmoved for as long as they live.
    #[allow(unsafe_code)]
    pub(super) fn new(list: &[Weight], weights: &Weights) -> Result<Self, String> {
        let info = cpu_memory(AllocatorType::Device)?;
        let values = list
            .iter()
            .map(|w| tensor(&info, w, weights))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            names: list
                .iter()
                .map(|w| {
                    CString::new(w.name.as_bytes()).map_err(|_| format!("weight {:?}", w.name))
                })
                .collect::<Result<_, _>>()?,
            values,
        })
    }
}

/// A description of CPU memory of this allocator type, released when dropped.
fn cpu_memory(kind: AllocatorType) -> Result<MemoryInfo<'static>, String> {
    MemoryInfo::new(AllocationDevice::CPU, 0, kind, MemoryType::Default)
        .map_err(|e| format!("ONNX Runtime cannot describe CPU memory: {e}"))
}

#[allow(unsafe_code)]
fn tensor(info: &MemoryInfo<'_>, w: &Weight, weights: &Weights) -> Result<Tensor, String> {
    let data = weights
        .at(w.offset, w.len)
        .ok_or_else(|| format!("weight {:?} lies outside the weights file", w.name))?;
    let ty = ort_type(w.data_type).ok_or_else(|| format!("weight {:?}: data type", w.name))?;
    let mut value: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: `data` is `w.len` bytes inside the mapping (checked by `at`), which is exactly the
    // shape's element count times the type's size (checked by `weight`); the tensor does not
    // own the memory, and the mapping outlives it (`TwoSessions` drops the tensors first).
    let status = unsafe {
        (ort::api().CreateTensorWithDataAsOrtValue)(
            info.ptr(),
            data,
            w.len,
            w.dims.as_ptr(),
            w.dims.len(),
            ty,
            &mut value,
        )
    };
    if let Some(e) = status_error(status) {
        return Err(format!("ONNX Runtime refused weight {:?}: {e}", w.name));
    }
    NonNull::new(value)
        .map(Tensor)
        .ok_or_else(|| format!("no tensor for weight {:?}", w.name))
}

/// The message of a status a C API call returned, which is released: `None` for success.
#[allow(unsafe_code)]
pub(super) fn status_error(status: ort::sys::OrtStatusPtr) -> Option<String> {
    if status.0.is_null() {
        return None;
    }
    let api = ort::api();
    // SAFETY: a non-null status returned to us is ours to read and release, once; its message
    // lives until the release.
    Some(unsafe {
        let m = (api.GetErrorMessage)(status.0);
        let message = if m.is_null() {
            "unknown error".to_owned()
        } else {
            std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned()
        };
        (api.ReleaseStatus)(status.0);
        message
    })
}

/// Gives the memory the first session freed back to the system (glibc keeps freed heap memory
/// for later allocations): without it, the weights' mapping would count beside the heap pages
/// the first session's copy of them left.
#[allow(unsafe_code)]
pub(super) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of the allocator's own heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Registers one CPU arena with ONNX Runtime's environment, which sessions made with
/// `session.use_env_allocators` share (onnxruntime_c_api.h, `CreateAndRegisterAllocator`).
/// Once per environment: a second registration is refused by ONNX Runtime and ignored here.
#[allow(unsafe_code)]
pub(super) fn share_working_memory(env: &ort::environment::Environment) {
    let Ok(info) = cpu_memory(AllocatorType::Arena) else {
        return;
    };
    // SAFETY: the environment lives as long as the process's ONNX Runtime (`LOADED`); the
    // description is copied by the registration; a null arena configuration asks for the
    // defaults.
    let status = unsafe {
        (ort::api().CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null())
    };
    // Refused once the environment has its arena (a second engine): that one serves. Any other
    // refusal leaves each session its own arena, which works, at the memory of two.
    if let Some(e) = status_error(status) {
        tracing::debug!("ONNX Runtime's shared arena not registered: {e}");
    }
}
