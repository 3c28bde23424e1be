"""dramatiq workers: wake-up catch-up, periodic tick, rebuild and replay."""
