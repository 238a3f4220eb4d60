/*
 * A type 2 AppImage runtime (https://github.com/AppImage/AppImageSpec/blob/master/draft.md#type-2-image-format),
 * built by build_installer.py from Debian's packages when appimagetool (which carries AppImage's own runtime) is
 * not on PATH: the official runtime is a download from GitHub, this one is built from libsquashfuse and libfuse3,
 * the same libraries the official runtime links, linked statically so that the AppImage needs only glibc.
 *
 * The AppImage is this ELF file with the app's squashfs image appended. Run, it:
 *   - mounts the image read-only with FUSE on a fresh folder in $TMPDIR and runs its AppRun (APPDIR, APPIMAGE,
 *     ARGV0 and OWD set as the spec says), then unmounts when AppRun exits, with AppRun's exit status;
 *   - where FUSE cannot be used (no /dev/fuse, or no fusermount3 for a normal user: the `fuse3` package), says so
 *     in one line and extracts the image to a fresh folder in $TMPDIR instead, runs it from there and deletes it;
 *     APPIMAGE_EXTRACT_AND_RUN=1 or --appimage-extract-and-run asks for that directly;
 *   - --appimage-extract [DIR] unpacks the image into DIR (default squashfs-root), --appimage-offset prints where
 *     the image starts, --appimage-help lists these.
 * The desktop-integration, update and signature options of the official runtime are not implemented.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION 32

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <squashfuse/ll.h>
#include <squashfuse/traverse.h>

static const char *prog = "AppImage";

static int fail(const char *what) {
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
    return 1;
}

/* The image starts where the ELF file ends: after its section header table (64-bit little-endian ELF). */
static off_t elf_size(const char *path) {
    unsigned char h[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = pread(fd, h, sizeof h, 0);
    close(fd);
    if (n != (ssize_t)sizeof h || memcmp(h, "\177ELF", 4) != 0 || h[4] != 2 || h[5] != 1) return -1;
    uint64_t shoff = 0;
    for (int i = 7; i >= 0; i--) shoff = (shoff << 8) | h[0x28 + i];
    uint16_t shentsize = (uint16_t)(h[0x3A] | h[0x3B] << 8), shnum = (uint16_t)(h[0x3C] | h[0x3D] << 8);
    return (off_t)(shoff + (uint64_t)shentsize * shnum);
}

static const char *tmpdir(void) {
    const char *t = getenv("TMPDIR");
    return t && *t ? t : "/tmp";
}

/* --- extraction --------------------------------------------------------------------------------------------- */
static int extract(const char *image, off_t offset, const char *dest) {
    sqfs fs;
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(image);
    if (sqfs_init(&fs, fd, (size_t)offset) != SQFS_OK) {
        fprintf(stderr, "%s: %s holds no squashfs image at offset %lld\n", prog, image, (long long)offset);
        return 1;
    }
    if (mkdir(dest, 0755) != 0 && errno != EEXIST) return fail(dest);
    sqfs_traverse trv;
    sqfs_err err = SQFS_OK;
    if (sqfs_traverse_open(&trv, &fs, sqfs_inode_root(&fs)) != SQFS_OK) return fail("reading the image");
    static char buf[1 << 16];
    int status = 0;
    while (status == 0 && sqfs_traverse_next(&trv, &err)) {
        if (trv.dir_end) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dest, trv.path);
        sqfs_inode inode;
        if (sqfs_inode_get(&fs, &inode, trv.entry.inode) != SQFS_OK) { status = fail(trv.path); break; }
        mode_t mode = inode.base.mode;
        if (S_ISDIR(mode)) {
            if (mkdir(path, (mode & 07777) | 0700) != 0 && errno != EEXIST) status = fail(path);
        } else if (S_ISREG(mode)) {
            int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
            if (out < 0) { status = fail(path); break; }
            uint64_t size = inode.xtra.reg.file_size;
            for (uint64_t pos = 0; pos < size;) {
                sqfs_off_t want = (sqfs_off_t)(size - pos < sizeof buf ? size - pos : sizeof buf);
                if (sqfs_read_range(&fs, &inode, (sqfs_off_t)pos, &want, buf) != SQFS_OK || want <= 0
                    || write(out, buf, (size_t)want) != (ssize_t)want) { status = fail(path); break; }
                pos += (uint64_t)want;
            }
            if (close(out) != 0 && status == 0) status = fail(path);
        } else if (S_ISLNK(mode)) {
            size_t size = 0;
            sqfs_readlink(&fs, &inode, NULL, &size);
            char *target = malloc(size);
            if (!target || sqfs_readlink(&fs, &inode, target, &size) != SQFS_OK) { status = fail(path); free(target); break; }
            unlink(path);
            if (symlink(target, path) != 0) status = fail(path);
            free(target);
        } /* devices, fifos and sockets: an AppDir has none */
    }
    if (err != SQFS_OK && status == 0) { fprintf(stderr, "%s: the image is damaged\n", prog); status = 1; }
    sqfs_traverse_close(&trv);
    sqfs_destroy(&fs);
    close(fd);
    return status;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

/* --- running AppRun ------------------------------------------------------------------------------------------ */
static pid_t child;

static void forward(int sig) {
    if (child > 0) kill(child, sig);
}

static int run_apprun(const char *appdir, const char *image, int argc, char **argv) {
    char apprun[PATH_MAX], owd[PATH_MAX];
    snprintf(apprun, sizeof apprun, "%s/AppRun", appdir);
    setenv("APPDIR", appdir, 1);
    setenv("APPIMAGE", image, 1);
    setenv("ARGV0", argv[0], 1);
    if (getcwd(owd, sizeof owd)) setenv("OWD", owd, 1);
    char **args = calloc((size_t)argc + 1, sizeof *args);
    args[0] = apprun;
    for (int i = 1; i < argc; i++) args[i] = argv[i];
    child = fork();
    if (child < 0) return fail("fork");
    if (child == 0) {
        execv(apprun, args);
        fprintf(stderr, "%s: cannot run %s: %s\n", prog, apprun, strerror(errno));
        _exit(127);
    }
    struct sigaction sa = {0};
    sa.sa_handler = forward;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP || sig == SIGQUIT || sig == SIGUSR1 || sig == SIGUSR2)
            sigaction(sig, &sa, NULL);
    int status;
    while (waitpid(child, &status, 0) < 0)
        if (errno != EINTR) return fail("waitpid");
    free(args);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void quiet(enum fuse_log_level level, const char *fmt, va_list ap) {
    (void)level; (void)fmt; (void)ap;
}

static void *fuse_loop(void *session) {
    fuse_session_loop((struct fuse_session *)session);
    return NULL;
}

/* 0 when FUSE could not mount the image (the caller extracts instead), else AppRun's status + 1. */
static int mount_and_run(const char *image, off_t offset, int argc, char **argv) {
    if (access("/dev/fuse", R_OK | W_OK) != 0) return 0;
    sqfs_ll *ll = sqfs_ll_open(image, (size_t)offset);
    if (!ll) return 0;
    char mnt[PATH_MAX];
    snprintf(mnt, sizeof mnt, "%s/.mount_%.16sXXXXXX", tmpdir(), prog);
    if (!mkdtemp(mnt)) return 0;
    struct fuse_lowlevel_ops ops = {0};
    ops.getattr = sqfs_ll_op_getattr;
    ops.opendir = sqfs_ll_op_opendir;
    ops.releasedir = sqfs_ll_op_releasedir;
    ops.readdir = sqfs_ll_op_readdir;
    ops.lookup = sqfs_ll_op_lookup;
    ops.open = sqfs_ll_op_open;
    ops.create = sqfs_ll_op_create;
    ops.release = sqfs_ll_op_release;
    ops.read = sqfs_ll_op_read;
    ops.readlink = sqfs_ll_op_readlink;
    ops.listxattr = sqfs_ll_op_listxattr;
    ops.getxattr = sqfs_ll_op_getxattr;
    ops.forget = sqfs_ll_op_forget;
    ops.statfs = stfs_ll_op_statfs;
    char *fuse_argv[] = {(char *)prog, "-o", "ro,nodev,nosuid,default_permissions", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    fuse_set_log_func(quiet); /* a failed mount is reported below, in one line */
    sqfs_ll_chan ch;
    if (sqfs_ll_mount(&ch, mnt, &args, &ops, sizeof ops, ll) != SQFS_OK) {
        rmdir(mnt);
        return 0;
    }
    pthread_t loop;
    pthread_create(&loop, NULL, fuse_loop, ch.session);
    int status = run_apprun(mnt, image, argc, argv);
    fuse_session_exit(ch.session);
    fuse_session_unmount(ch.session); /* ends the loop's read on /dev/fuse */
    pthread_join(loop, NULL);
    fuse_session_destroy(ch.session);
    rmdir(mnt);
    return status + 1;
}

int main(int argc, char **argv) {
    char image[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", image, sizeof image - 1);
    if (n < 0) return fail("/proc/self/exe");
    image[n] = '\0';
    const char *base = strrchr(argv[0], '/');
    prog = base ? base + 1 : argv[0];
    off_t offset = elf_size(image);
    if (offset <= 0) { fprintf(stderr, "%s: %s is not an AppImage (no ELF header)\n", prog, image); return 1; }

    const char *opt = argc > 1 ? argv[1] : "";
    if (strcmp(opt, "--appimage-offset") == 0) { printf("%lld\n", (long long)offset); return 0; }
    if (strcmp(opt, "--appimage-extract") == 0) {
        const char *dest = argc > 2 ? argv[2] : "squashfs-root";
        int status = extract(image, offset, dest);
        if (status == 0) printf("%s\n", dest);
        return status;
    }
    if (strcmp(opt, "--appimage-help") == 0) {
        printf("%s: an AppImage.\n  --appimage-extract [DIR]   unpack into DIR (default squashfs-root)\n"
               "  --appimage-extract-and-run  run without FUSE (also APPIMAGE_EXTRACT_AND_RUN=1)\n"
               "  --appimage-offset          where the image starts in this file\n", prog);
        return 0;
    }
    int extract_and_run = strcmp(opt, "--appimage-extract-and-run") == 0;
    if (extract_and_run) { argv[1] = argv[0]; argv++; argc--; }
    const char *env = getenv("APPIMAGE_EXTRACT_AND_RUN");
    extract_and_run |= env && strcmp(env, "1") == 0;

    if (!extract_and_run) {
        int status = mount_and_run(image, offset, argc, argv);
        if (status > 0) return status - 1;
        fprintf(stderr, "%s: cannot mount the image with FUSE (install the fuse3 package to start faster); "
                        "extracting it to %s instead\n", prog, tmpdir());
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/appimage_extracted_%.16sXXXXXX", tmpdir(), prog);
    if (!mkdtemp(dir)) return fail(dir);
    int status = extract(image, offset, dir);
    if (status == 0) status = run_apprun(dir, image, argc, argv);
    if (!getenv("NO_CLEANUP")) nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
