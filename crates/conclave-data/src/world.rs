//! Reference data for the record generator: countries with their real largest cities (weights
//! roughly proportional to population, in millions), a plausible median annual salary in US
//! dollars, phone and postal-code formats, and the naming and street conventions used there.
//!
//! Format patterns: `#` is a digit, `A` an upper-case letter, anything else is literal.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Anglo,
    German,
    French,
    Hispanic,
    Portuguese,
    Italian,
    Dutch,
    Nordic,
    Slavic,
    Greek,
    Turkish,
    Arabic,
    Hebrew,
    African,
    Indian,
    Chinese,
    Japanese,
    Korean,
    Vietnamese,
    Thai,
    Indonesian,
    Filipino,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streets {
    English,
    German,
    French,
    Spanish,
    Portuguese,
    Italian,
    Dutch,
    Nordic,
    Japanese,
    Chinese,
    Indian,
    Korean,
}

#[derive(Debug)]
pub struct Country {
    pub name: &'static str,
    pub salary_usd: u32,
    pub phone: &'static str,
    pub postal: &'static str,
    pub names: Names,
    pub streets: Streets,
    pub cities: &'static [(&'static str, f64)],
}

macro_rules! country {
    ($name:expr, $salary:expr, $phone:expr, $postal:expr, $names:ident, $streets:ident, [$(($c:expr, $w:expr)),+ $(,)?]) => {
        Country {
            name: $name,
            salary_usd: $salary,
            phone: $phone,
            postal: $postal,
            names: Names::$names,
            streets: Streets::$streets,
            cities: &[$(($c, $w)),+],
        }
    };
}

pub static COUNTRIES: &[Country] = &[
    country!(
        "United States",
        60000,
        "+1 ###-###-####",
        "#####",
        Anglo,
        English,
        [
            ("New York", 8.3),
            ("Los Angeles", 3.9),
            ("Chicago", 2.7),
            ("Houston", 2.3),
            ("Phoenix", 1.6),
            ("Philadelphia", 1.6),
            ("San Antonio", 1.5),
            ("San Diego", 1.4),
            ("Dallas", 1.3),
            ("Seattle", 0.75),
            ("Boston", 0.65),
            ("Denver", 0.7)
        ]
    ),
    country!(
        "United Kingdom",
        42000,
        "+44 7### ######",
        "A## #AA",
        Anglo,
        English,
        [
            ("London", 9.0),
            ("Birmingham", 1.1),
            ("Leeds", 0.8),
            ("Glasgow", 0.6),
            ("Manchester", 0.55),
            ("Liverpool", 0.5),
            ("Edinburgh", 0.5),
            ("Bristol", 0.47)
        ]
    ),
    country!(
        "Germany",
        50000,
        "+49 15# ########",
        "#####",
        German,
        German,
        [
            ("Berlin", 3.6),
            ("Hamburg", 1.8),
            ("Munich", 1.5),
            ("Cologne", 1.1),
            ("Frankfurt", 0.75),
            ("Stuttgart", 0.63),
            ("Düsseldorf", 0.62),
            ("Leipzig", 0.6)
        ]
    ),
    country!(
        "France",
        40000,
        "+33 6 ## ## ## ##",
        "#####",
        French,
        French,
        [
            ("Paris", 2.1),
            ("Marseille", 0.87),
            ("Lyon", 0.52),
            ("Toulouse", 0.49),
            ("Nice", 0.34),
            ("Nantes", 0.32),
            ("Strasbourg", 0.29),
            ("Bordeaux", 0.26)
        ]
    ),
    country!(
        "Canada",
        50000,
        "+1 ###-###-####",
        "A#A #A#",
        Anglo,
        English,
        [
            ("Toronto", 2.8),
            ("Montreal", 1.8),
            ("Calgary", 1.3),
            ("Ottawa", 1.0),
            ("Edmonton", 1.0),
            ("Winnipeg", 0.75),
            ("Vancouver", 0.66),
            ("Quebec City", 0.55)
        ]
    ),
    country!(
        "India",
        8000,
        "+91 9#### #####",
        "######",
        Indian,
        Indian,
        [
            ("Mumbai", 12.4),
            ("Delhi", 11.0),
            ("Bangalore", 8.4),
            ("Hyderabad", 6.8),
            ("Ahmedabad", 5.6),
            ("Chennai", 4.6),
            ("Kolkata", 4.5),
            ("Pune", 3.1)
        ]
    ),
    country!(
        "China",
        15000,
        "+86 13# #### ####",
        "######",
        Chinese,
        Chinese,
        [
            ("Shanghai", 24.0),
            ("Beijing", 21.0),
            ("Chongqing", 16.0),
            ("Chengdu", 16.0),
            ("Guangzhou", 15.0),
            ("Tianjin", 13.0),
            ("Shenzhen", 13.0),
            ("Wuhan", 11.0)
        ]
    ),
    country!(
        "Japan",
        38000,
        "+81 90-####-####",
        "###-####",
        Japanese,
        Japanese,
        [
            ("Tokyo", 14.0),
            ("Yokohama", 3.7),
            ("Osaka", 2.7),
            ("Nagoya", 2.3),
            ("Sapporo", 1.9),
            ("Fukuoka", 1.6),
            ("Kobe", 1.5),
            ("Kyoto", 1.5)
        ]
    ),
    country!(
        "Brazil",
        9000,
        "+55 11 9####-####",
        "#####-###",
        Portuguese,
        Portuguese,
        [
            ("São Paulo", 12.0),
            ("Rio de Janeiro", 6.7),
            ("Brasília", 3.0),
            ("Salvador", 2.9),
            ("Fortaleza", 2.7),
            ("Belo Horizonte", 2.5),
            ("Manaus", 2.2),
            ("Curitiba", 1.9)
        ]
    ),
    country!(
        "Australia",
        55000,
        "+61 4## ### ###",
        "####",
        Anglo,
        English,
        [
            ("Sydney", 5.3),
            ("Melbourne", 5.0),
            ("Brisbane", 2.5),
            ("Perth", 2.1),
            ("Adelaide", 1.4),
            ("Canberra", 0.46),
            ("Hobart", 0.25)
        ]
    ),
    country!(
        "Ireland",
        48000,
        "+353 8# ### ####",
        "A## A#A#",
        Anglo,
        English,
        [
            ("Dublin", 1.2),
            ("Cork", 0.21),
            ("Limerick", 0.09),
            ("Galway", 0.08),
            ("Waterford", 0.05)
        ]
    ),
    country!(
        "Spain",
        28000,
        "+34 6## ### ###",
        "#####",
        Hispanic,
        Spanish,
        [
            ("Madrid", 3.3),
            ("Barcelona", 1.6),
            ("Valencia", 0.79),
            ("Seville", 0.69),
            ("Zaragoza", 0.67),
            ("Málaga", 0.58),
            ("Bilbao", 0.35)
        ]
    ),
    country!(
        "Italy",
        32000,
        "+39 3## ### ####",
        "#####",
        Italian,
        Italian,
        [
            ("Rome", 2.8),
            ("Milan", 1.4),
            ("Naples", 0.92),
            ("Turin", 0.85),
            ("Palermo", 0.63),
            ("Genoa", 0.56),
            ("Bologna", 0.39),
            ("Florence", 0.37)
        ]
    ),
    country!(
        "Mexico",
        9000,
        "+52 55 #### ####",
        "#####",
        Hispanic,
        Spanish,
        [
            ("Mexico City", 9.2),
            ("Tijuana", 1.9),
            ("León", 1.7),
            ("Puebla", 1.7),
            ("Guadalajara", 1.5),
            ("Monterrey", 1.1),
            ("Mérida", 1.0)
        ]
    ),
    country!(
        "Netherlands",
        48000,
        "+31 6 ########",
        "#### AA",
        Dutch,
        Dutch,
        [
            ("Amsterdam", 0.9),
            ("Rotterdam", 0.65),
            ("The Hague", 0.55),
            ("Utrecht", 0.36),
            ("Eindhoven", 0.24),
            ("Groningen", 0.23)
        ]
    ),
    country!(
        "Sweden",
        45000,
        "+46 7# ### ## ##",
        "### ##",
        Nordic,
        Nordic,
        [
            ("Stockholm", 0.98),
            ("Gothenburg", 0.59),
            ("Malmö", 0.35),
            ("Uppsala", 0.24),
            ("Västerås", 0.13)
        ]
    ),
    country!(
        "Poland",
        18000,
        "+48 ### ### ###",
        "##-###",
        Slavic,
        English,
        [
            ("Warsaw", 1.8),
            ("Kraków", 0.8),
            ("Łódź", 0.67),
            ("Wrocław", 0.64),
            ("Poznań", 0.53),
            ("Gdańsk", 0.47)
        ]
    ),
    country!(
        "South Korea",
        35000,
        "+82 10-####-####",
        "#####",
        Korean,
        Korean,
        [
            ("Seoul", 9.4),
            ("Busan", 3.3),
            ("Incheon", 3.0),
            ("Daegu", 2.4),
            ("Daejeon", 1.5),
            ("Gwangju", 1.4)
        ]
    ),
    country!(
        "Singapore",
        50000,
        "+65 #### ####",
        "######",
        Chinese,
        English,
        [("Singapore", 5.6)]
    ),
    country!(
        "South Africa",
        12000,
        "+27 ## ### ####",
        "####",
        African,
        English,
        [
            ("Johannesburg", 5.6),
            ("Cape Town", 4.6),
            ("Durban", 3.7),
            ("Pretoria", 2.5),
            ("Gqeberha", 1.2)
        ]
    ),
    country!(
        "Argentina",
        8000,
        "+54 9 11 ####-####",
        "A####AAA",
        Hispanic,
        Spanish,
        [
            ("Buenos Aires", 3.1),
            ("Córdoba", 1.4),
            ("Rosario", 1.2),
            ("Mendoza", 1.0),
            ("La Plata", 0.8)
        ]
    ),
    country!(
        "Switzerland",
        85000,
        "+41 7# ### ## ##",
        "####",
        German,
        German,
        [
            ("Zürich", 0.42),
            ("Geneva", 0.2),
            ("Basel", 0.17),
            ("Lausanne", 0.14),
            ("Bern", 0.13)
        ]
    ),
    country!(
        "Belgium",
        46000,
        "+32 4## ## ## ##",
        "####",
        Dutch,
        French,
        [
            ("Brussels", 1.2),
            ("Antwerp", 0.53),
            ("Ghent", 0.26),
            ("Charleroi", 0.2),
            ("Liège", 0.2)
        ]
    ),
    country!(
        "Norway",
        60000,
        "+47 ### ## ###",
        "####",
        Nordic,
        Nordic,
        [
            ("Oslo", 0.7),
            ("Bergen", 0.29),
            ("Trondheim", 0.21),
            ("Stavanger", 0.14)
        ]
    ),
    country!(
        "Denmark",
        58000,
        "+45 ## ## ## ##",
        "####",
        Nordic,
        Nordic,
        [
            ("Copenhagen", 0.64),
            ("Aarhus", 0.29),
            ("Odense", 0.18),
            ("Aalborg", 0.12)
        ]
    ),
    country!(
        "Finland",
        44000,
        "+358 4# ### ####",
        "#####",
        Nordic,
        Nordic,
        [
            ("Helsinki", 0.66),
            ("Espoo", 0.3),
            ("Tampere", 0.24),
            ("Vantaa", 0.24),
            ("Oulu", 0.21)
        ]
    ),
    country!(
        "Portugal",
        20000,
        "+351 9## ### ###",
        "####-###",
        Portuguese,
        Portuguese,
        [
            ("Lisbon", 0.55),
            ("Porto", 0.23),
            ("Braga", 0.19),
            ("Coimbra", 0.14),
            ("Funchal", 0.1)
        ]
    ),
    country!(
        "Austria",
        48000,
        "+43 6## #######",
        "####",
        German,
        German,
        [
            ("Vienna", 1.9),
            ("Graz", 0.29),
            ("Linz", 0.21),
            ("Salzburg", 0.16),
            ("Innsbruck", 0.13)
        ]
    ),
    country!(
        "Turkey",
        9000,
        "+90 5## ### ## ##",
        "#####",
        Turkish,
        English,
        [
            ("Istanbul", 15.5),
            ("Ankara", 5.7),
            ("Izmir", 4.4),
            ("Bursa", 3.1),
            ("Antalya", 2.6)
        ]
    ),
    country!(
        "Egypt",
        4000,
        "+20 1## ### ####",
        "#####",
        Arabic,
        English,
        [
            ("Cairo", 10.0),
            ("Alexandria", 5.2),
            ("Giza", 4.4),
            ("Shubra El Kheima", 1.2),
            ("Port Said", 0.75)
        ]
    ),
    country!(
        "Nigeria",
        3000,
        "+234 8## ### ####",
        "######",
        African,
        English,
        [
            ("Lagos", 15.0),
            ("Kano", 4.1),
            ("Ibadan", 3.6),
            ("Abuja", 3.5),
            ("Port Harcourt", 1.9)
        ]
    ),
    country!(
        "Kenya",
        3500,
        "+254 7## ######",
        "#####",
        African,
        English,
        [
            ("Nairobi", 4.4),
            ("Mombasa", 1.2),
            ("Kisumu", 0.6),
            ("Nakuru", 0.57),
            ("Eldoret", 0.48)
        ]
    ),
    country!(
        "Israel",
        40000,
        "+972 5#-###-####",
        "#######",
        Hebrew,
        English,
        [
            ("Jerusalem", 0.95),
            ("Tel Aviv", 0.46),
            ("Haifa", 0.29),
            ("Rishon LeZion", 0.26),
            ("Petah Tikva", 0.25)
        ]
    ),
    country!(
        "New Zealand",
        42000,
        "+64 2# ### ####",
        "####",
        Anglo,
        English,
        [
            ("Auckland", 1.7),
            ("Wellington", 0.42),
            ("Christchurch", 0.38),
            ("Hamilton", 0.18),
            ("Dunedin", 0.13)
        ]
    ),
    country!(
        "Chile",
        12000,
        "+56 9 #### ####",
        "#######",
        Hispanic,
        Spanish,
        [
            ("Santiago", 6.3),
            ("Antofagasta", 0.36),
            ("Viña del Mar", 0.33),
            ("Valparaíso", 0.3),
            ("Concepción", 0.22)
        ]
    ),
    country!(
        "Colombia",
        6000,
        "+57 3## ### ####",
        "######",
        Hispanic,
        Spanish,
        [
            ("Bogotá", 7.4),
            ("Medellín", 2.5),
            ("Cali", 2.2),
            ("Barranquilla", 1.2),
            ("Cartagena", 0.9)
        ]
    ),
    country!(
        "Philippines",
        4500,
        "+63 9## ### ####",
        "####",
        Filipino,
        English,
        [
            ("Quezon City", 2.9),
            ("Manila", 1.8),
            ("Davao City", 1.8),
            ("Caloocan", 1.6),
            ("Cebu City", 0.96)
        ]
    ),
    country!(
        "Vietnam",
        4000,
        "+84 9# ### ## ##",
        "######",
        Vietnamese,
        English,
        [
            ("Ho Chi Minh City", 9.0),
            ("Hanoi", 8.0),
            ("Hai Phong", 2.0),
            ("Can Tho", 1.2),
            ("Da Nang", 1.1)
        ]
    ),
    country!(
        "Thailand",
        7000,
        "+66 8# ### ####",
        "#####",
        Thai,
        English,
        [
            ("Bangkok", 10.5),
            ("Nonthaburi", 0.25),
            ("Hat Yai", 0.16),
            ("Chiang Mai", 0.13),
            ("Udon Thani", 0.13)
        ]
    ),
    country!(
        "Indonesia",
        4500,
        "+62 8##-####-####",
        "#####",
        Indonesian,
        English,
        [
            ("Jakarta", 10.6),
            ("Surabaya", 2.9),
            ("Bandung", 2.5),
            ("Medan", 2.4),
            ("Semarang", 1.7)
        ]
    ),
    country!(
        "Czechia",
        20000,
        "+420 ### ### ###",
        "### ##",
        Slavic,
        English,
        [
            ("Prague", 1.3),
            ("Brno", 0.38),
            ("Ostrava", 0.28),
            ("Plzeň", 0.17)
        ]
    ),
    country!(
        "Greece",
        18000,
        "+30 69# ### ####",
        "### ##",
        Greek,
        English,
        [
            ("Athens", 3.1),
            ("Thessaloniki", 0.8),
            ("Patras", 0.2),
            ("Heraklion", 0.17)
        ]
    ),
    country!(
        "Romania",
        14000,
        "+40 7## ### ###",
        "######",
        Slavic,
        English,
        [
            ("Bucharest", 1.8),
            ("Cluj-Napoca", 0.32),
            ("Timișoara", 0.32),
            ("Iași", 0.29)
        ]
    ),
];

/// First names and family names by naming convention.
pub fn names(pool: Names) -> (&'static [&'static str], &'static [&'static str]) {
    match pool {
        Names::Anglo => (
            &[
                "James",
                "Mary",
                "John",
                "Patricia",
                "Robert",
                "Jennifer",
                "Michael",
                "Linda",
                "David",
                "Elizabeth",
                "William",
                "Sarah",
                "Emma",
                "Oliver",
                "Olivia",
                "Liam",
            ],
            &[
                "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
                "Taylor", "Anderson", "Thomas", "Moore", "Clark", "Walker",
            ],
        ),
        Names::German => (
            &[
                "Lukas", "Anna", "Leon", "Mia", "Finn", "Lena", "Jonas", "Hannah", "Paul",
                "Sophie", "Felix", "Laura",
            ],
            &[
                "Müller",
                "Schmidt",
                "Schneider",
                "Fischer",
                "Weber",
                "Meyer",
                "Wagner",
                "Becker",
                "Schulz",
                "Hoffmann",
            ],
        ),
        Names::French => (
            &[
                "Louis", "Emma", "Gabriel", "Jade", "Raphaël", "Louise", "Arthur", "Alice",
                "Jules", "Chloé", "Hugo", "Léa",
            ],
            &[
                "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
                "Leroy", "Moreau",
            ],
        ),
        Names::Hispanic => (
            &[
                "Santiago",
                "Sofía",
                "Mateo",
                "Valentina",
                "Sebastián",
                "Isabella",
                "Diego",
                "Camila",
                "Alejandro",
                "Lucía",
                "Javier",
                "María",
            ],
            &[
                "García",
                "Rodríguez",
                "Martínez",
                "López",
                "González",
                "Hernández",
                "Pérez",
                "Sánchez",
                "Ramírez",
                "Torres",
                "Flores",
            ],
        ),
        Names::Portuguese => (
            &[
                "Miguel", "Alice", "Arthur", "Helena", "Heitor", "Laura", "João", "Beatriz",
                "Pedro", "Mariana",
            ],
            &[
                "Silva",
                "Santos",
                "Oliveira",
                "Souza",
                "Pereira",
                "Costa",
                "Rodrigues",
                "Almeida",
                "Ferreira",
                "Carvalho",
            ],
        ),
        Names::Italian => (
            &[
                "Leonardo",
                "Sofia",
                "Francesco",
                "Giulia",
                "Alessandro",
                "Aurora",
                "Lorenzo",
                "Ginevra",
                "Matteo",
                "Beatrice",
            ],
            &[
                "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
                "Marino", "Greco",
            ],
        ),
        Names::Dutch => (
            &[
                "Daan", "Emma", "Sem", "Julia", "Lucas", "Tess", "Noah", "Mila", "Levi", "Sara",
            ],
            &[
                "de Jong",
                "Jansen",
                "de Vries",
                "van den Berg",
                "Bakker",
                "Visser",
                "Peeters",
                "Janssens",
                "Maes",
                "Smit",
            ],
        ),
        Names::Nordic => (
            &[
                "Lars", "Ingrid", "Erik", "Astrid", "Oskar", "Freja", "Nils", "Maja", "Anders",
                "Sofie", "Eino", "Aino",
            ],
            &[
                "Hansen",
                "Johansson",
                "Nielsen",
                "Andersson",
                "Larsen",
                "Karlsson",
                "Jensen",
                "Nilsson",
                "Pedersen",
                "Virtanen",
                "Korhonen",
            ],
        ),
        Names::Slavic => (
            &[
                "Jakub",
                "Zuzanna",
                "Jan",
                "Julia",
                "Tomasz",
                "Anna",
                "Piotr",
                "Katarzyna",
                "Ondřej",
                "Tereza",
                "Andrei",
                "Elena",
            ],
            &[
                "Nowak",
                "Kowalski",
                "Wiśniewski",
                "Novák",
                "Dvořák",
                "Kowalczyk",
                "Popescu",
                "Svoboda",
                "Wójcik",
                "Ionescu",
            ],
        ),
        Names::Greek => (
            &[
                "Georgios",
                "Maria",
                "Dimitrios",
                "Eleni",
                "Konstantinos",
                "Katerina",
                "Nikolaos",
                "Sofia",
            ],
            &[
                "Papadopoulos",
                "Georgiou",
                "Nikolaidis",
                "Pappas",
                "Oikonomou",
                "Vlachos",
                "Karagiannis",
            ],
        ),
        Names::Turkish => (
            &[
                "Yusuf", "Zeynep", "Eymen", "Elif", "Mustafa", "Defne", "Emir", "Ecrin",
            ],
            &[
                "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik", "Yıldız", "Aydın", "Öztürk",
            ],
        ),
        Names::Arabic => (
            &[
                "Mohamed", "Fatima", "Ahmed", "Mariam", "Omar", "Nour", "Youssef", "Salma", "Ali",
                "Layla",
            ],
            &[
                "Hassan", "Ali", "Ibrahim", "Mahmoud", "Mostafa", "Abdallah", "Saleh", "Khalil",
                "Nasser", "Farouk",
            ],
        ),
        Names::Hebrew => (
            &[
                "Noam", "Tamar", "Ari", "Noa", "Yosef", "Maya", "David", "Shira",
            ],
            &[
                "Cohen", "Levi", "Mizrahi", "Peretz", "Biton", "Friedman", "Avraham",
            ],
        ),
        Names::African => (
            &[
                "Chinedu", "Amina", "Emeka", "Ngozi", "Kwame", "Wanjiru", "Tunde", "Zanele",
                "Sipho", "Aisha",
            ],
            &[
                "Okafor", "Adeyemi", "Mwangi", "Otieno", "Nkosi", "Dlamini", "Okonkwo", "Mensah",
                "Kamau", "Balogun",
            ],
        ),
        Names::Indian => (
            &[
                "Aarav", "Ananya", "Vihaan", "Diya", "Arjun", "Priya", "Rohan", "Kavya", "Aditya",
                "Isha", "Rahul", "Sneha",
            ],
            &[
                "Sharma", "Patel", "Singh", "Kumar", "Gupta", "Reddy", "Iyer", "Nair", "Das",
                "Mehta",
            ],
        ),
        Names::Chinese => (
            &[
                "Wei", "Fang", "Hao", "Jing", "Lei", "Min", "Tao", "Xiu", "Yang", "Yan",
            ],
            &[
                "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Tan",
                "Lim",
            ],
        ),
        Names::Japanese => (
            &[
                "Haruto", "Yui", "Sota", "Hina", "Yuto", "Aoi", "Ren", "Sakura", "Riku", "Mei",
            ],
            &[
                "Sato",
                "Suzuki",
                "Takahashi",
                "Tanaka",
                "Watanabe",
                "Ito",
                "Yamamoto",
                "Nakamura",
                "Kobayashi",
                "Kato",
            ],
        ),
        Names::Korean => (
            &[
                "Min-jun", "Seo-yeon", "Ji-ho", "Ha-eun", "Do-yun", "Ji-woo", "Seo-jun", "Su-ah",
                "Ye-jun", "Ha-rin",
            ],
            &[
                "Kim", "Lee", "Park", "Choi", "Jung", "Kang", "Cho", "Yoon", "Jang", "Lim",
            ],
        ),
        Names::Vietnamese => (
            &["Anh", "Minh", "Linh", "Huy", "Trang", "Duc", "Lan", "Tuan"],
            &["Nguyen", "Tran", "Le", "Pham", "Hoang", "Vu", "Dang"],
        ),
        Names::Thai => (
            &[
                "Somchai", "Suda", "Anan", "Malee", "Niran", "Kanya", "Prasert", "Ratana",
            ],
            &[
                "Saetang",
                "Wongsawat",
                "Chaiyaporn",
                "Srisuk",
                "Boonmee",
                "Thongchai",
            ],
        ),
        Names::Indonesian => (
            &[
                "Budi", "Siti", "Agus", "Dewi", "Rizky", "Putri", "Adi", "Ayu",
            ],
            &[
                "Santoso", "Wijaya", "Saputra", "Hidayat", "Pratama", "Kusuma", "Nugroho",
            ],
        ),
        Names::Filipino => (
            &[
                "Jose",
                "Maria",
                "Juan",
                "Angel",
                "Mark",
                "Kristine",
                "John Paul",
                "Mary Grace",
            ],
            &[
                "Dela Cruz",
                "Reyes",
                "Santos",
                "Garcia",
                "Mendoza",
                "Bautista",
                "Ramos",
                "Aquino",
            ],
        ),
    }
}

/// Street names and how an address is written.
pub fn street_names(style: Streets) -> &'static [&'static str] {
    match style {
        Streets::English => &[
            "Oak", "Maple", "Cedar", "Park", "Main", "High", "Church", "Mill", "Elm", "King",
            "Queen", "Station", "Lake", "Hill", "Victoria", "Market",
        ],
        Streets::German => &[
            "Haupt", "Bahnhof", "Garten", "Schul", "Berg", "Linden", "Kirch", "Wald", "Sonnen",
            "Ring", "Goethe", "Schiller",
        ],
        Streets::French => &[
            "de la Paix",
            "Victor Hugo",
            "des Lilas",
            "Pasteur",
            "de la République",
            "Voltaire",
            "du Moulin",
            "des Écoles",
            "Jean Jaurès",
            "Gambetta",
        ],
        Streets::Spanish => &[
            "Mayor",
            "Real",
            "del Sol",
            "de la Paz",
            "San José",
            "Nueva",
            "Alcalá",
            "de Cervantes",
            "Bolívar",
            "Hidalgo",
        ],
        Streets::Portuguese => &[
            "das Flores",
            "Augusta",
            "São João",
            "da Liberdade",
            "do Comércio",
            "XV de Novembro",
            "da Consolação",
            "Direita",
        ],
        Streets::Italian => &[
            "Roma",
            "Garibaldi",
            "Mazzini",
            "Dante",
            "Verdi",
            "Cavour",
            "Marconi",
            "Vittorio Emanuele",
        ],
        Streets::Dutch => &[
            "Kerk",
            "Dorps",
            "Molen",
            "School",
            "Stations",
            "Juliana",
            "Wilhelmina",
            "Beatrix",
        ],
        Streets::Nordic => &[
            "Storgatan",
            "Drottninggatan",
            "Kungsgatan",
            "Vestergade",
            "Nørregade",
            "Karl Johans gate",
            "Mannerheimintie",
            "Strandvejen",
        ],
        Streets::Japanese => &[
            "Chuo", "Minami", "Kita", "Nishi", "Higashi", "Sakae", "Hon", "Shin",
        ],
        Streets::Chinese => &[
            "Nanjing",
            "Huaihai",
            "Zhongshan",
            "Renmin",
            "Jiefang",
            "Changan",
            "Heping",
            "Jianguo",
        ],
        Streets::Indian => &[
            "MG", "Nehru", "Gandhi", "Station", "Park", "Temple", "Ring", "Lake",
        ],
        Streets::Korean => &[
            "Sejong-daero",
            "Teheran-ro",
            "Gangnam-daero",
            "Jong-ro",
            "Eulji-ro",
            "Hangang-daero",
        ],
    }
}

/// Writes an address the way it is written in that country.
pub fn address(style: Streets, street: &str, number: u32, suffix: &str, city: &str) -> String {
    match style {
        Streets::English => format!("{number} {street} {suffix}"),
        Streets::German => format!("{street}straße {number}"),
        Streets::French => format!("{number} rue {street}"),
        Streets::Spanish => format!("Calle {street} {number}"),
        Streets::Portuguese => format!("Rua {street}, {number}"),
        Streets::Italian => format!("Via {street} {number}"),
        Streets::Dutch => format!("{street}straat {number}"),
        Streets::Nordic => format!("{street} {number}"),
        Streets::Japanese => format!(
            "{street} {}-{}-{}, {city}",
            number % 9 + 1,
            number % 30 + 1,
            number % 20 + 1
        ),
        Streets::Chinese => format!("{number} {street} Road"),
        Streets::Indian => format!("{number}, {street} Road"),
        Streets::Korean => format!("{number} {street}"),
    }
}

pub const STREET_SUFFIXES: &[&str] = &["Street", "Avenue", "Road", "Lane", "Drive"];

/// Eye colours with their approximate world shares.
pub const EYE_COLORS: &[(&str, f64)] = &[
    ("brown", 55.0),
    ("blue", 20.0),
    ("hazel", 10.0),
    ("green", 8.0),
    ("gray", 5.0),
    ("amber", 2.0),
];

/// Favourite colours, as surveys rank them.
pub const FAVORITE_COLORS: &[(&str, f64)] = &[
    ("blue", 35.0),
    ("green", 14.0),
    ("purple", 12.0),
    ("red", 9.0),
    ("black", 7.0),
    ("orange", 6.0),
    ("yellow", 5.0),
    ("pink", 5.0),
    ("white", 4.0),
    ("brown", 3.0),
];
