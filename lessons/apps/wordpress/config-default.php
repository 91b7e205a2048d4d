<?php
/*
 * The course image's WordPress configuration, read by Debian's /usr/share/wordpress/wp-config.php
 * for any host name (config-default.php), so the site answers on 127.0.0.1:8080 as on any name.
 *
 * As the official image's wp-config-docker.php: the database from the environment that
 * `docker run -e` gives (WORDPRESS_DB_HOST, _USER, _PASSWORD, _NAME, WORDPRESS_TABLE_PREFIX),
 * the keys and salts from WORDPRESS_AUTH_KEY ... or else the ones the entrypoint made for this
 * container on its first start (/etc/wordpress/salts.php: fresh for every container).
 */
function edu_env($name, $default) {
    $value = getenv($name);
    if ($value === false || $value === '') {
        $file = getenv($name . '_FILE');  // docker secrets: a file holding the value
        return ($file !== false && is_readable($file)) ? rtrim(file_get_contents($file), "\r\n")
                                                       : $default;
    }
    return $value;
}

define('DB_NAME', edu_env('WORDPRESS_DB_NAME', 'wordpress'));
define('DB_USER', edu_env('WORDPRESS_DB_USER', 'example username'));
define('DB_PASSWORD', edu_env('WORDPRESS_DB_PASSWORD', 'example password'));
define('DB_HOST', edu_env('WORDPRESS_DB_HOST', 'mysql'));
define('DB_CHARSET', edu_env('WORDPRESS_DB_CHARSET', 'utf8'));
define('DB_COLLATE', edu_env('WORDPRESS_DB_COLLATE', ''));
$table_prefix = edu_env('WORDPRESS_TABLE_PREFIX', 'wp_');

require '/etc/wordpress/salts.php';
foreach (array('AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT',
               'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT') as $key) {
    define($key, edu_env('WORDPRESS_' . $key, $edu_salts[$key]));
}

/*
 * No request leaves the host. WordPress calls its own servers (api.wordpress.org: versions,
 * translations, the dashboard's news and PHP checks) and itself (wp-cron.php, at the URL
 * the browser used, which inside the container is nobody's). Each would wait on a network
 * that is not there; here they are refused before any DNS lookup or connection.
 */
define('WP_HTTP_BLOCK_EXTERNAL', true);  // only the site's own host may be asked
define('WP_ACCESSIBLE_HOSTS', '');       // and no other
define('AUTOMATIC_UPDATER_DISABLED', true);
define('WP_AUTO_UPDATE_CORE', false);
define('DISABLE_WP_CRON', true);         // no loopback request to wp-cron.php on page loads

define('WP_DEBUG', !!edu_env('WORDPRESS_DEBUG', ''));

// Anything else, as the official image allows: WORDPRESS_CONFIG_EXTRA is PHP, run here.
if ($edu_extra = getenv('WORDPRESS_CONFIG_EXTRA')) {
    eval($edu_extra);
}
