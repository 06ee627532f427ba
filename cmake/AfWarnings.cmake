# Warning flags for our own targets (third-party headers come in as SYSTEM includes).
function(af_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
    # GCC 12 warns falsely on `"text" + std::string` at -O2 (its bug 105329, fixed in 13).
    $<$<AND:$<CXX_COMPILER_ID:GNU>,$<VERSION_LESS:$<CXX_COMPILER_VERSION>,13>>:-Wno-restrict>)
endfunction()
if(AF_SANITIZE)
  # UBSan without its `null` and `alignment` checks: ASan already reports a null dereference (a
  # SEGV with its stack) and x86-64 loads misaligned data correctly; at -O0 these two checks on
  # every member access cost about a fifth of the test build's compile time (CI's budget).
  add_compile_options(-fsanitize=address,undefined -fno-sanitize=null,alignment
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
  # The test build's executables are not position independent: a PIE `af` of this build carries
  # about 5 million relative relocations, which cost every process start (the end-to-end scripts
  # start hundreds) ~0.45 s of CPU in the loader and in copy-on-write faults.
  add_link_options($<$<STREQUAL:$<TARGET_PROPERTY:TYPE>,EXECUTABLE>:-no-pie>)
endif()
