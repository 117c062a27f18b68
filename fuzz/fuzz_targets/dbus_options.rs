//! The `a{sv}` options of the D-Bus methods: a message body in D-Bus wire format (little
//! endian), deserialized by zvariant as zbus does for an incoming call, then read by every
//! method's option parser.
#![no_main]

use edgeinfer_daemon::dbus::options::{self, Options};
use libfuzzer_sys::fuzz_target;
use zbus::zvariant::LE;
use zbus::zvariant::serialized::{Context, Data};

fuzz_target!(|data: &[u8]| {
    let body = Data::new(data, Context::new_dbus(LE, 0));
    let Ok((options, _)) = body.deserialize::<Options>() else { return };
    let _ = options::image(&options);
    let _ = options::segment(&options);
    let _ = options::embed(&options);
    let _ = options::classify(&options);
    let _ = options::image_only(&options);
    let _ = options::generate(&options);
});
